//! The job file shown in the README is valid and documents the real defaults.

use clickpulse_job::JobConfig;

fn readme_toml() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    let start = readme
        .find("```toml\n")
        .expect("a toml block in the README")
        + "```toml\n".len();
    let len = readme[start..].find("```").expect("the toml block ends");
    readme[start..start + len].to_string()
}

#[test]
fn the_readme_job_file_loads_and_shows_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, readme_toml()).unwrap();
    let loaded = JobConfig::load(Some(&path)).unwrap();
    assert_eq!(loaded, JobConfig::default());
}
