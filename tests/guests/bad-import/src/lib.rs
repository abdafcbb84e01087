//! A component that imports something weft does not provide.
wit_bindgen::generate!({ path: "wit", world: "bad" });

struct Bad;

impl Guest for Bad {
    fn run() -> String {
        test::bad::secrets_of_the_host::steal()
    }
}

export!(Bad);
