//! Results as a JUnit XML report: one test suite, one test case per case,
//! failures with the differences, skipped cases skipped.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::runner::{CaseResult, Status};

pub fn report(suite_name: &str, results: &[CaseResult]) -> Result<String, String> {
    let mut report = Report::new(format!("conform {suite_name}"));
    let mut suite = TestSuite::new(suite_name.to_string());
    for result in results {
        let detail = result
            .failures
            .iter()
            .chain(&result.notes)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        let status = match result.status {
            Status::Pass => TestCaseStatus::success(),
            Status::Skipped => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(detail.clone());
                status
            }
            Status::Fail | Status::Timeout | Status::Error => {
                let kind = if result.status == Status::Error {
                    NonSuccessKind::Error
                } else {
                    NonSuccessKind::Failure
                };
                let mut status = TestCaseStatus::non_success(kind);
                status.set_message(result.failures.first().cloned().unwrap_or_default());
                status.set_type(result.status.name());
                status.set_description(detail.clone());
                status
            }
        };
        let mut case = TestCase::new(result.id.clone(), status);
        case.set_classname(suite_name.to_string());
        case.set_time(result.duration);
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report.to_string().map_err(|e| e.to_string())
}
