//! The Argo CD health script, run by gopher-lua with only the libraries Argo CD
//! opens, gives every fixture the health its `health_test.yaml` expects; kstatus
//! (cli-utils, what Flux uses) agrees with it on every fixture the operator wrote.

use facet_e2e::gitops::{health_script, judge};

#[test]
fn gitops_engines_judge_the_fixtures_as_documented() {
    let dir = health_script().parent().unwrap().to_path_buf();
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).unwrap())
            .unwrap();
    let cases = tests["tests"].as_sequence().unwrap();
    assert!(cases.len() >= 8, "{}", cases.len());
    for case in cases {
        let path = case["inputPath"].as_str().unwrap();
        let object: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(path)).unwrap()).unwrap();
        let health = judge(&object);
        let expected = &case["healthStatus"];
        assert_eq!(
            (health.argo.as_str(), health.argo_message.as_str()),
            (
                expected["status"].as_str().unwrap(),
                expected["message"].as_str().unwrap()
            ),
            "{path}"
        );
        // kstatus calls an object without a status Current (it cannot know
        // better); every status the operator writes, it judges as Argo CD does.
        let kstatus = match (health.argo.as_str(), object.get("status")) {
            (_, None) => "Current",
            ("Healthy", _) => "Current",
            ("Progressing", _) => "InProgress",
            ("Degraded", _) => "Failed",
            (other, _) => panic!("{path}: Argo CD health {other}"),
        };
        assert_eq!(health.kstatus, kstatus, "{path}: {health:?}");
    }
}
