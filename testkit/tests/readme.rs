//! The README's "Testing a component" example is a real test file,
//! `components/templates/tests/readme_example.rs`, compiled and run with the
//! templates component's tests; this keeps the README's copy identical.

#[test]
fn the_readme_example_is_the_tested_file() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("## Testing a component")
        .nth(1)
        .expect("a \"Testing a component\" section in the README");
    let example = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("a rust code block in that section");
    let file = std::fs::read_to_string(root.join("components/templates/tests/readme_example.rs"))
        .expect("the example's file");
    assert_eq!(
        example, file,
        "the README's example differs from components/templates/tests/readme_example.rs"
    );
}
