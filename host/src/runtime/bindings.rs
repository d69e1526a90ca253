//! Generated host bindings of the `handler` world. The rest of the runtime
//! uses the few names re-exported from `runtime`; nothing outside
//! `runtime` sees these types.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});
