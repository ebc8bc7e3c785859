//! Grace-period cookies: small copyable values that remember "a grace period that starts
//! after now", to be polled later instead of blocked on.
//!
//! A [`Cookie`] tracks normal grace periods only. A [`FullCookie`] also completes when an
//! *expedited* grace period ends, like the kernel's `struct rcu_gp_oldstate`.
//!
//! # A cookie knows its flavor
//!
//! A cookie is only meaningful to the flavor that produced it: RCU and every SRCU domain count
//! their own grace periods. So a cookie's type names its flavor ([`Cookie`] is
//! `Cookie<Rcu>`, an SRCU domain's is `Cookie<Srcu>`, see [`Issuer`]), and handing an SRCU
//! cookie to `rcu::poll_state` does not compile:
//!
//! ```compile_fail
//! let domain = grace::srcu::Srcu::new().unwrap();
//! let cookie = domain.get_state();
//! grace::rcu::poll_state(cookie); // expected `Cookie<Rcu>`, found `Cookie<Srcu>`
//! ```
//!
//! Two SRCU domains have the same type, so an SRCU cookie also carries its domain's id, and
//! polling it on another domain panics with a message naming both domains:
//!
//! ```should_panic
//! use grace::srcu::Srcu;
//! let (a, b) = (Srcu::new().unwrap(), Srcu::new().unwrap());
//! b.poll_state(a.get_state()); // panics: a cookie of one domain polled on another
//! ```
//!
//! The cost is unchanged: an RCU cookie is one word and its poll one load and a compare; an
//! SRCU cookie is two words, and its poll compares the id with the domain's read-mostly line,
//! which the poll reads anyway.
//!
//! At most [`NUM_ACTIVE_POLL_OLDSTATE`] distinct [`Cookie`] values (and
//! [`NUM_ACTIVE_POLL_FULL_OLDSTATE`] distinct [`FullCookie`] values) can be not-yet-completed
//! at any one time, so a structure that keeps one bucket per outstanding cookie (as
//! `Pending<T>` does) can size an array by them.

#[cfg(not(loom))]
use crate::flavor::Rcu;
use crate::gp::seq;
use std::fmt;
use std::hash::{Hash, Hasher};

/// How many distinct [`Cookie`] values can be outstanding (not yet completed) at once: one
/// for the grace period in progress and one for the grace period after it. The kernel's
/// `NUM_ACTIVE_RCU_POLL_OLDSTATE`.
///
/// # Examples
///
/// ```
/// use grace::cookie::{Cookie, NUM_ACTIVE_POLL_OLDSTATE};
/// // One bucket per cookie that may still be waiting, plus one for the expired ones.
/// let buckets: [Vec<u32>; NUM_ACTIVE_POLL_OLDSTATE + 1] = Default::default();
/// assert_eq!(buckets.len(), 3);
/// ```
pub const NUM_ACTIVE_POLL_OLDSTATE: usize = 2;

/// How many distinct [`FullCookie`] values can be outstanding at once: two normal snapshots
/// times two expedited snapshots. The kernel's `NUM_ACTIVE_RCU_POLL_FULL_OLDSTATE`.
///
/// # Examples
///
/// ```
/// assert_eq!(grace::cookie::NUM_ACTIVE_POLL_FULL_OLDSTATE, 4);
/// ```
pub const NUM_ACTIVE_POLL_FULL_OLDSTATE: usize = 4;

pub(crate) mod sealed {
    /// Keeps [`Issuer`](super::Issuer) closed: only grace's flavors issue cookies.
    pub trait Sealed {}
}

/// A flavor that issues cookies: [`Rcu`] or an SRCU domain type
/// ([`Srcu`](crate::srcu::Srcu), [`SrcuLite`](crate::srcu::SrcuLite)). It is the type
/// parameter of [`Cookie`], so that a cookie can only be polled by its own flavor. Sealed:
/// a [`Flavor`](crate::Flavor) of your own names the issuer of the flavor it wraps.
///
/// # Examples
///
/// ```
/// use grace::cookie::Cookie;
/// use grace::srcu::Srcu;
/// use grace::Rcu;
/// // One word for RCU; the sequence and the domain id for SRCU.
/// assert_eq!(std::mem::size_of::<Cookie<Rcu>>(), 8);
/// assert_eq!(std::mem::size_of::<Cookie<Srcu>>(), 16);
/// ```
pub trait Issuer: sealed::Sealed + 'static {
    /// What identifies one producer among the flavor's values at run time: `()` for RCU (there
    /// is one), the domain id for SRCU.
    #[doc(hidden)]
    type Domain: Copy + Eq + Hash + fmt::Debug + Send + Sync + 'static;
    /// The domain of a cookie that every producer accepts (only [`Cookie::completed`] has it).
    #[doc(hidden)]
    const ANY: Self::Domain;
    /// The domain as a number, unique among the flavor's producers (0 for RCU).
    #[doc(hidden)]
    fn domain_key(domain: Self::Domain) -> u64;
}

/// Under loom the flavors are compiled out; the RCU issuer stays, as a plain marker.
#[cfg(loom)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Rcu;

impl sealed::Sealed for Rcu {}
impl Issuer for Rcu {
    type Domain = ();
    const ANY: () = ();
    fn domain_key(_: ()) -> u64 {
        0
    }
}

/// The issuer of the cookies `Pending`'s shards keep: the flavor's sequence alone, its domain
/// implied by the `Pending` that holds them.
pub(crate) enum Raw {}
impl sealed::Sealed for Raw {}
impl Issuer for Raw {
    type Domain = ();
    const ANY: () = ();
    fn domain_key(_: ()) -> u64 {
        0
    }
}

/// A cookie with its flavor erased, for structures that hold one flavor's cookies only.
pub(crate) type RawCookie = Cookie<Raw>;

/// A snapshot of a flavor's normal grace-period sequence: "the grace period that ends after
/// every reader active now has finished". The type parameter is the flavor that issued it
/// ([`Issuer`]); plain `Cookie` is an RCU cookie.
///
/// Get one from `get_state` (starts nothing) or `start_poll` (makes sure a grace period will
/// run), then ask `poll_state` whether it has completed.
///
/// # Examples
///
/// ```
/// use grace::rcu;
/// let cookie = rcu::start_poll();
/// rcu::cond_synchronize(cookie); // returns at once if a grace period already elapsed
/// assert!(rcu::poll_state(cookie));
/// ```
pub struct Cookie<I: Issuer = Rcu> {
    pub(crate) seq: u64,
    pub(crate) domain: I::Domain,
}

impl<I: Issuer> Clone for Cookie<I> {
    #[inline]
    fn clone(&self) -> Self {
        *self
    }
}
impl<I: Issuer> Copy for Cookie<I> {}
impl<I: Issuer> PartialEq for Cookie<I> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq && self.domain == other.domain
    }
}
impl<I: Issuer> Eq for Cookie<I> {}
impl<I: Issuer> Hash for Cookie<I> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.seq.hash(state);
        self.domain.hash(state);
    }
}
impl<I: Issuer> fmt::Debug for Cookie<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cookie")
            .field("seq", &self.seq)
            .field("domain", &self.domain)
            .finish()
    }
}

impl<I: Issuer> Cookie<I> {
    /// A cookie that always reads as completed, like the kernel's
    /// `get_completed_synchronize_rcu()`: a sentinel for "nothing to wait for". Every
    /// producer of the flavor (every SRCU domain) accepts it.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = grace::cookie::Cookie::completed();
    /// assert!(grace::rcu::poll_state(c));
    /// let d = grace::srcu::Srcu::new().unwrap();
    /// assert!(d.poll_state(grace::cookie::Cookie::completed()));
    /// ```
    pub const fn completed() -> Cookie<I> {
        Cookie {
            seq: seq::COMPLETED,
            domain: I::ANY,
        }
    }

    /// Whether two cookies stand for the same grace period (the kernel's
    /// `same_state_synchronize_rcu`). Cheaper than comparing poll results, and exact.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::rcu;
    /// let a = rcu::get_state();
    /// let b = rcu::get_state();
    /// // With no grace period started in between, both wait for the same one.
    /// # let _ = (a, b);
    /// assert!(a.same_state(a));
    /// ```
    #[inline]
    pub fn same_state(self, other: Cookie<I>) -> bool {
        self == other
    }

    /// The raw sequence value, for diagnostics or to keep a cookie in an `AtomicU64`
    /// ([`Flavor::cookie_from_raw`](crate::Flavor::cookie_from_raw) rebuilds it). Its layout
    /// is private and may change.
    ///
    /// # Examples
    ///
    /// ```
    /// use grace::{Flavor, Rcu};
    /// let c = grace::rcu::get_state();
    /// assert_eq!(Rcu.cookie_from_raw(c.raw()), c);
    /// ```
    #[inline]
    pub const fn raw(self) -> u64 {
        self.seq
    }

    /// The same sequence with the flavor forgotten, for a structure that holds one flavor's
    /// cookies only.
    #[inline]
    #[cfg_attr(loom, allow(dead_code))] // its user, Pending's flavor adapter, is not modelled
    pub(crate) const fn erase(self) -> RawCookie {
        Cookie {
            seq: self.seq,
            domain: (),
        }
    }
}

impl<I: Issuer<Domain = ()>> Cookie<I> {
    /// A cookie of a flavor with a single producer, from its sequence value.
    #[inline]
    pub(crate) const fn from_seq(seq: u64) -> Cookie<I> {
        Cookie { seq, domain: () }
    }
}

/// A cookie that completes when either a normal or an expedited grace period that started
/// after it was taken has ended (the kernel's `struct rcu_gp_oldstate`).
///
/// # Examples
///
/// ```
/// use grace::rcu;
/// let c = rcu::get_state_full();
/// rcu::synchronize_expedited();
/// assert!(rcu::poll_state_full(c), "an expedited grace period completes a full cookie");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FullCookie {
    pub(crate) normal: u64,
    pub(crate) expedited: u64,
}

impl FullCookie {
    /// A full cookie that always reads as completed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(grace::rcu::poll_state_full(grace::cookie::FullCookie::completed()));
    /// ```
    pub const fn completed() -> FullCookie {
        FullCookie {
            normal: seq::COMPLETED,
            expedited: seq::COMPLETED,
        }
    }

    /// Whether two full cookies stand for the same pair of grace periods.
    ///
    /// # Examples
    ///
    /// ```
    /// let c = grace::rcu::get_state_full();
    /// assert!(c.same_state(c));
    /// ```
    pub const fn same_state(self, other: FullCookie) -> bool {
        self.normal == other.normal && self.expedited == other.expedited
    }

    /// The normal-grace-period part, as a plain [`Cookie`].
    ///
    /// # Examples
    ///
    /// ```
    /// let full = grace::rcu::get_state_full();
    /// let _plain: grace::cookie::Cookie = full.normal();
    /// ```
    pub const fn normal(self) -> Cookie {
        Cookie::from_seq(self.normal)
    }
}
