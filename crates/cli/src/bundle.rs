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
use waylay::{AddError, Addon, ManagerHandle, OptionSpec, Options, OptionsError, ProxyBuilder};

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

/// Where an addon goes among the others, as in mitmproxy's default addon list: before the
/// scripts (`block_list`, `onboarding`) or after server replay (the rewriting rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Before the scripts.
    Early,
    /// After server replay, before save and the dumper.
    Rules,
}

macro_rules! bundle {
    ($($field:ident: $ty:ty = $make:expr, $slot:ident;)*) => {
        /// One instance of every bundled addon, until it is registered.
        pub(crate) struct Bundle {
            $($field: Option<$ty>,)*
        }

        impl Bundle {
            pub(crate) fn new() -> Self {
                Self { $($field: Some($make),)* }
            }

            /// Declares every bundled addon's options in `options`.
            pub(crate) fn declare(&mut self, options: &mut Options) -> Result<(), OptionsError> {
                $(
                    if let Some(a) = self.$field.as_mut() {
                        for spec in declared(a) {
                            options.add(spec)?;
                        }
                    }
                )*
                Ok(())
            }

            /// Runs every addon's `configure` on `options`; the first refusal.
            pub(crate) fn check(&mut self, options: &Options) -> Result<(), OptionsError> {
                let options = Arc::new(options.clone());
                $(
                    if let Some(a) = self.$field.as_mut() {
                        verdict(a, &options)?;
                    }
                )*
                Ok(())
            }

            /// Registers the addons of `slot`, in order, whatever the options: each handles
            /// its flow hooks only while its option gives it something to do, so an idle one
            /// costs nothing per request, and one set at run time (the web UI, a script's
            /// `ctx.options`, [`ManagerHandle::set`](waylay::ManagerHandle::set)) acts from
            /// the next request.
            pub(crate) fn register(&mut self, mut builder: ProxyBuilder, slot: Slot) -> ProxyBuilder {
                $(
                    if Slot::$slot == slot && let Some(a) = self.$field.take() {
                        builder = builder.addon(a);
                    }
                )*
                builder
            }

            /// [`register`](Self::register) for a proxy-less manager (`-n`).
            pub(crate) async fn add(&mut self, m: &ManagerHandle, slot: Slot) -> Result<(), AddError> {
                $(
                    if Slot::$slot == slot && let Some(a) = self.$field.take() {
                        m.add(a).await?;
                    }
                )*
                Ok(())
            }

            /// The names of the options the addons declare.
            #[cfg(test)]
            pub(crate) fn option_names(&mut self) -> std::collections::BTreeSet<String> {
                let mut names = std::collections::BTreeSet::new();
                $(
                    if let Some(a) = self.$field.as_mut() {
                        names.extend(declared(a).into_iter().map(|s| s.name));
                    }
                )*
                names
            }
        }
    };
}

bundle! {
    block_list: BlockList = BlockList::new(), Early;
    onboarding: Onboarding = Onboarding::new(), Early;
    map_remote: MapRemote = MapRemote::new(), Rules;
    map_local: MapLocal = MapLocal::new(), Rules;
    modify_body: ModifyBody = ModifyBody::new(), Rules;
    modify_headers: ModifyHeaders = ModifyHeaders::new(), Rules;
    stickyauth: StickyAuth = StickyAuth::new(), Rules;
    stickycookie: StickyCookie = StickyCookie::new(), Rules;
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
