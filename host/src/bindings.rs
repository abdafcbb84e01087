//! Host bindings generated from `wit/`: the `workflow` world, and the
//! `workflow-sync` world for guests that cannot call `async` imports.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "weft:workflow/workflow",
    imports: { default: trappable },
    exports: { default: async | store },
});

pub use self::weft::workflow::types;

/// The `workflow-sync` world (JavaScript guests): its blocking `wait` is an
/// async host function, which suspends the guest until an operation ends.
pub mod sync {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weft:workflow/workflow-sync",
        imports: {
            "weft:workflow/durable-sync.wait": async | trappable,
            default: trappable,
        },
        exports: { default: async | store },
        with: { "weft:workflow/types": super::weft::workflow::types },
    });
}

/// The `workflow-shared` world (`isolation = "shared"`): a `run` resource
/// per run, whose methods are the durable calls of that run.
pub mod shared {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weft:workflow/workflow-shared",
        imports: { default: trappable },
        exports: { default: async | store },
        with: {
            "weft:workflow/types": super::weft::workflow::types,
            "weft:workflow/durable": super::weft::workflow::durable,
            "weft:workflow/shared.run": crate::durable::shared::SharedRun,
        },
    });
}
