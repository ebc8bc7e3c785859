//! Tests of the pointer types: tag arithmetic here (no flavor needed, so Miri runs them with
//! the leak check on), and the Harris–Michael list of `list.rs` model-checked under loom
//! (`loom_list.rs`, run by `.ci/loom.sh`). The list's threaded tests against every flavor are
//! in `tests/atomic.rs`, its Miri runs in `tests/atomic_miri.rs`.

#[allow(unused_imports)] // the names `list.rs` expects from its parent
use crate::atomic::{Atomic, Owned, Retire, Shared};
#[allow(unused_imports)]
use crate::sync::Ordering;

mod list;
#[cfg(loom)]
mod loom_list;

#[cfg(not(loom))]
mod unit {
    use crate::atomic::{Owned, Shared};

    #[test]
    fn tag_bits_come_from_alignment() {
        // align 1: no tag bits at all.
        assert_eq!(Shared::<u8>::null().with_tag(1).tag(), 0);
        // align 2: one bit.
        assert_eq!(Shared::<u16>::null().with_tag(3).tag(), 1);
        // align 8: three bits; higher bits are dropped.
        assert_eq!(Shared::<u64>::null().with_tag(0b1_1111).tag(), 0b111);
        #[repr(align(64))]
        struct Line(#[allow(dead_code)] u8);
        assert_eq!(Shared::<Line>::null().with_tag(63).tag(), 63);
    }

    #[test]
    fn owned_keeps_its_value_and_tag_through_retagging() {
        let o = Owned::new(41u64).with_tag(5);
        assert_eq!((*o, o.tag()), (41, 5));
        let mut o = o.with_tag(2);
        *o += 1;
        assert_eq!((*o, o.tag()), (42, 2));
        let b = o.into_box();
        assert_eq!(*b, 42);
    }

    #[test]
    fn a_tagged_null_is_null_and_equality_includes_the_tag() {
        let p = Shared::<u32>::null();
        assert!(p.with_tag(1).is_null());
        assert!(p.with_tag(1).as_raw().is_null());
        assert_ne!(p, p.with_tag(1));
        assert_eq!(p, p.with_tag(1).with_tag(0));
    }
}
