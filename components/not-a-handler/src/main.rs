//! Test-only: a `wasi:cli/command` component with no `handle` export. The
//! host must refuse to load it.

fn main() {
    println!("I am not a handler");
}
