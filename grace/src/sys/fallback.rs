//! The portable stand-in for the system calls, used under Miri, loom and on non-Linux targets:
//! no membarrier (so [`super::init`] always picks fence mode) and a CPU hint derived from the
//! thread's identity.

pub(super) fn membarrier_register() -> bool {
    false
}

pub(super) fn membarrier() {
    // Never reached: membarrier_register() refused, so the mode is Fence.
    crate::sync::fence(crate::sync::Ordering::SeqCst);
}

pub(super) fn current_cpu() -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() as usize
}

/// No fork detection here (Miri, loom, non-Linux targets).
#[cfg_attr(loom, allow(dead_code))] // its user is compiled out under loom
pub(super) fn at_fork_child(_child: unsafe extern "C" fn()) -> bool {
    false
}

/// No final hook without pthread keys: `arm` refuses and the caller keeps its fallback.
#[cfg_attr(loom, allow(dead_code))] // its users are compiled out under loom
pub(crate) struct FinalHook;

#[cfg_attr(loom, allow(dead_code))]
impl FinalHook {
    pub(crate) const fn new(_dtor: unsafe extern "C" fn(*mut std::ffi::c_void)) -> FinalHook {
        FinalHook
    }

    pub(crate) fn arm(&self, _arg: *mut std::ffi::c_void) -> bool {
        false
    }

    pub(crate) fn disarm(&self) {}
}

/// No portable way to read a thread's name from any point of its life: none.
#[cfg_attr(loom, allow(dead_code))] // its user, the report, is compiled out under loom
pub(super) fn thread_name() -> Option<String> {
    None
}
