//! What ships beside the binary: shell completions and the man page generated from the clap
//! definitions, the Kubernetes manifest's structure, the systemd unit, the licenses.

use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn katop(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_katop"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn asset(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definition() {
    let bash = katop(&["completions", "bash"]);
    assert!(
        bash.contains("complete") && bash.contains("--stale-after") && bash.contains("exporter")
    );
    let zsh = katop(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef katop"), "{}", &zsh[..40]);
    let fish = katop(&["completions", "fish"]);
    assert!(fish.contains("complete -c katop"));
    let man = katop(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH katop"),
        "{}",
        &man[..80]
    );
    assert!(man.contains("stale\\-after") || man.contains("stale-after"));
    // What a man page has beyond --help, and its NAME not repeating itself.
    for section in [
        ".SH \"DASHBOARD KEYS\"",
        ".SH \"ENVIRONMENT\"",
        ".SH \"EXIT STATUS\"",
        ".SH \"FILES\"",
        ".SH \"PORTS\"",
        "KATOP_STALE_AFTER",
        "9899/tcp",
        ".nf",
    ] {
        assert!(man.contains(section), "the man page lacks {section}");
    }
    assert!(!man.contains("katop \\- katop:"), "NAME repeats itself");
    // Every subcommand it names has its own page, and `--dir` writes them all.
    let dir = std::env::temp_dir().join(format!("katop-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    katop(&["man", "--dir", dir.to_str().unwrap()]);
    for page in [
        "katop",
        "katop-kill",
        "katop-keepalive",
        "katop-exporter",
        "katop-history",
        "katop-record",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{page}.1"))).unwrap();
        assert!(
            text.contains(&format!(".TH {page}")),
            "{page}: {}",
            &text[..60]
        );
        assert!(
            man.contains(&format!("\\fB{}\\fR(1)", page.replace('-', "\\-"))) || page == "katop"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn get<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, k| match k.parse::<usize>() {
        Ok(i) => &y[i],
        Err(_) => &y[*k],
    })
}

#[test]
fn the_kubernetes_manifest_has_the_structure_kubernetes_expects() {
    let docs = YamlLoader::load_from_str(&asset("assets/kubernetes/katop-exporter.yaml")).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "DaemonSet", "Service"]);
    let ds = &docs[1];
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let labels = get(ds, &["spec", "selector", "matchLabels"]);
    assert_eq!(get(ds, &["spec", "template", "metadata", "labels"]), labels);
    let pod = get(ds, &["spec", "template", "spec"]);
    assert_eq!(
        pod["hostPID"].as_bool(),
        Some(true),
        "every container's processes"
    );
    let c = get(pod, &["containers", "0"]);
    let args: Vec<&str> = c["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args[0], "exporter");
    let sec = &c["securityContext"];
    assert_eq!(sec["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sec["allowPrivilegeEscalation"].as_bool(), Some(false));
    let drop: Vec<&str> = get(sec, &["capabilities", "drop"])
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(drop, ["ALL"]);
    let add: Vec<&str> = get(sec, &["capabilities", "add"])
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        !add.contains(&"NET_ADMIN"),
        "the exporter never kills: {add:?}"
    );
    assert_eq!(
        get(c, &["ports", "0", "containerPort"]).as_i64(),
        Some(9899)
    );
    let svc = &docs[2];
    let ann = get(svc, &["metadata", "annotations"]);
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(ann["prometheus.io/port"].as_str(), Some("9899"));
    assert_eq!(get(svc, &["spec", "selector"]), labels);
}

#[test]
fn the_systemd_unit_runs_the_exporter_hardened_and_read_only() {
    let unit = asset("assets/systemd/katop-exporter.service");
    assert!(unit.contains("ExecStart=/usr/bin/katop exporter"));
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        // Room for thousands of namespaces and a scrape flood (collector::fds).
        "LimitNOFILE=524288",
    ] {
        assert!(unit.contains(line), "missing {line}");
    }
    let caps = unit
        .lines()
        .find(|l| l.starts_with("CapabilityBoundingSet="))
        .unwrap();
    assert!(
        !caps.contains("CAP_NET_ADMIN"),
        "the exporter never kills: {caps}"
    );
}

#[test]
fn the_recorders_unit_keeps_its_store_private_and_never_kills() {
    let unit = asset("assets/systemd/katop-record.service");
    assert!(unit.contains("ExecStart=/usr/bin/katop record --store /var/lib/katop"));
    // Both jobs in one unit: the exporter's port, and never beside the exporter's unit.
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains("--listen :9899"), "{exec}");
    for line in [
        "Conflicts=katop-exporter.service",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=katop",
        "StateDirectoryMode=0700",
        "ReadWritePaths=/var/lib/katop",
        "LimitNOFILE=524288",
    ] {
        assert!(unit.contains(line), "missing {line}");
    }
    let caps = unit
        .lines()
        .find(|l| l.starts_with("CapabilityBoundingSet="))
        .unwrap();
    assert!(
        !caps.contains("CAP_NET_ADMIN"),
        "the recorder never kills: {caps}"
    );
    assert!(
        asset("Cargo.toml").contains("assets/systemd/katop-record.service"),
        "shipped in the package"
    );
}

#[test]
fn the_licenses_match_the_manifest() {
    let manifest = asset("Cargo.toml");
    assert!(manifest.contains(r#"license = "MIT OR Apache-2.0""#));
    assert!(asset("LICENSE-MIT").starts_with("MIT License"));
    assert!(asset("LICENSE-APACHE").contains("Apache License"));
}
