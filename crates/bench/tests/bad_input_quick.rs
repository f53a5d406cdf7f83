//! R5 in CI: the quick subset of `bad-input` (config fuzz, webhook bodies, tampered tarballs);
//! every check must report 0 failures, and each ran its cases.

use bench::bad_input::{run, runner_manager_binary, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_quick() {
    // The binary sample needs the runner-manager binary of this profile, which a workspace test
    // run builds; a lone `cargo test -p bench` may not have it (then that row says skipped).
    let binary = match runner_manager_binary(false) {
        Ok(path) => Some(path),
        Err(err) => {
            eprintln!("check-config sample skipped: {err:#}");
            None
        }
    };
    let options = Options {
        quick: true,
        seed: 20_261_127,
        binary,
    };
    let outcome = run(&options).await.expect("the checks run");
    println!("{}", outcome.table());
    for problem in &outcome.problems {
        eprintln!("FAILURE: {problem}");
    }
    assert_eq!(outcome.failures(), 0, "{}", outcome.table());
    assert!(outcome.rows.len() >= 4, "{}", outcome.table());
    for row in &outcome.rows {
        if !row.evidence.starts_with("skipped") {
            assert!(row.cases >= 20, "{}: too few cases", row.check);
        }
    }
}
