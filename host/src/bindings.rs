//! Host bindings generated from `wit/workflow.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "weft:workflow/workflow",
    imports: { default: trappable },
    exports: { default: async | store },
});

pub use self::weft::workflow::types;
