//! The bundled addons the binary registers, in mitmproxy's order. Their options are learned
//! from their own `load` (the binary names none of them), and their values are checked by
//! their own `configure` before anything starts.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use waylay::addons::{
    BlockList, MapLocal, MapRemote, ModifyBody, ModifyHeaders, Onboarding, StickyAuth, StickyCookie,
};
use waylay::hooks::{Configure, Loader};
use waylay::{Addon, OptionSpec, Options, OptionsError, ProxyBuilder};

/// Runs a hook future that completes without waiting (a `load` or `configure` that does
/// no IO); `None` if it would wait, and the manager then runs it for real.
fn now<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// The options `addon` declares in `load`.
fn declared<A: Addon>(addon: &mut A) -> Vec<OptionSpec> {
    let mut loader = Loader::new();
    let _ = now(addon.load(&mut loader));
    loader.options().to_vec()
}

/// `addon`'s verdict on `options`, as its `configure` at start will give it.
fn verdict<A: Addon>(addon: &mut A, options: &Arc<Options>) -> Result<(), OptionsError> {
    let mut cfg = Configure {
        updated: options.names(),
        options: options.clone(),
    };
    now(addon.configure(&mut cfg)).unwrap_or(Ok(()))
}

macro_rules! bundle {
    ($($field:ident: $ty:ty = $make:expr, active when $active:expr;)*) => {
        /// One instance of every bundled addon.
        pub(crate) struct Bundle {
            $($field: $ty,)*
        }

        impl Bundle {
            pub(crate) fn new() -> Self {
                Self { $($field: $make,)* }
            }

            /// Declares every bundled addon's options in `options`.
            pub(crate) fn declare(&mut self, options: &mut Options) -> Result<(), OptionsError> {
                $(
                    for spec in declared(&mut self.$field) {
                        options.add(spec)?;
                    }
                )*
                Ok(())
            }

            /// Runs every addon's `configure` on `options`; the first refusal.
            pub(crate) fn check(&mut self, options: &Options) -> Result<(), OptionsError> {
                let options = Arc::new(options.clone());
                $( verdict(&mut self.$field, &options)?; )*
                Ok(())
            }

            /// Registers the addons the options make active, in order. The binary cannot
            /// change options once running, so an addon with nothing to do costs nothing.
            pub(crate) fn register(self, mut builder: ProxyBuilder, o: &Options) -> ProxyBuilder {
                $(
                    let active: fn(&Options) -> bool = $active;
                    if active(o) {
                        builder = builder.addon(self.$field);
                    }
                )*
                builder
            }

            /// The names of the options the addons declare.
            #[cfg(test)]
            pub(crate) fn option_names(&mut self) -> std::collections::BTreeSet<String> {
                let mut names = std::collections::BTreeSet::new();
                $( names.extend(declared(&mut self.$field).into_iter().map(|s| s.name)); )*
                names
            }
        }
    };
}

bundle! {
    block_list: BlockList = BlockList::new(), active when |o| !o.seq("block_list").is_empty();
    onboarding: Onboarding = Onboarding::new(), active when |o| o.bool("onboarding");
    map_remote: MapRemote = MapRemote::new(), active when |o| !o.seq("map_remote").is_empty();
    map_local: MapLocal = MapLocal::new(), active when |o| !o.seq("map_local").is_empty();
    modify_body: ModifyBody = ModifyBody::new(), active when |o| !o.seq("modify_body").is_empty();
    modify_headers: ModifyHeaders = ModifyHeaders::new(), active when |o| !o.seq("modify_headers").is_empty();
    stickyauth: StickyAuth = StickyAuth::new(), active when |o| o.str("stickyauth").is_some();
    stickycookie: StickyCookie = StickyCookie::new(), active when |o| o.str("stickycookie").is_some();
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addons_declare_their_own_options() {
        let mut b = Bundle::new();
        let names = b.option_names();
        for n in [
            "onboarding",
            "onboarding_host",
            "block_list",
            "map_remote",
            "map_local",
            "modify_body",
            "modify_headers",
            "stickyauth",
            "stickycookie",
        ] {
            assert!(names.contains(n), "{n}");
        }
        let mut o = Options::new();
        b.declare(&mut o).unwrap();
        assert!(o.contains("onboarding_host"));
        o.set_specs(&["onboarding_host=x y"]).unwrap();
        let e = b.check(&o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "option onboarding_host: \"x y\" is not a host name"
        );
    }
}
