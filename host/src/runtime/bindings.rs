//! Generated host bindings of the `handler` world, in each contract version
//! the host serves. The rest of the runtime uses the few names re-exported
//! from `runtime`; nothing outside `runtime` sees these types.
//!
//! The current version (0.2.0, `wit/marketplace.wit`) is generated here,
//! 0.1.0 (`wit/0.1.0`) in `v010`; `runtime/v010.rs` implements 0.1.0's
//! imports through the current ones. Their `handle` exports differ (0.2.0's
//! response body may be a cache entry the host holds), so a component is
//! pre-instantiated with the world it was built for (`types::Pre`).

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
    with: {
        // A cache value handed to the guest as a handle (`get-entry`).
        "marketplace:host/cache.entry": crate::runtime::invocation::Entry,
    },
});

/// Contract 0.1.0.
pub mod v010 {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit/0.1.0",
        imports: { default: async },
        exports: { default: async },
    });
}
