//! Generated host bindings of the `handler` world, in each contract version
//! the host serves. The rest of the runtime uses the few names re-exported
//! from `runtime`; nothing outside `runtime` sees these types.
//!
//! The current version (0.2.0, `wit/marketplace.wit`) is generated here,
//! 0.1.0 (`wit/0.1.0`) in `v010`; `runtime/v010.rs` implements 0.1.0's
//! imports through the current ones. Both worlds export the same `handle`
//! over the same records, and wasmtime checks an export by its structure,
//! so one `HandlerPre` of the current world instantiates either.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
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
