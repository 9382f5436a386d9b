//! Which container a process belongs to, from its cgroup, and the container's name from the
//! runtime's local metadata: `docker:web-1`, `podman:web-1`, `k8s:payments/api-7d9f…`,
//! `lxc:db`, or the runtime and a short id when no name can be read.

use std::path::Path;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// A container runtime katop recognises in cgroup paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
    Lxc,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
            Runtime::Lxc => "lxc",
        }
    }
}

/// A container, as a cgroup path tells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Container {
    pub runtime: Runtime,
    /// The runtime's id (64 hex digits), or the LXC container's name.
    pub id: String,
    /// The Kubernetes pod's uid, when the path is a kubepods one.
    pub pod_uid: Option<String>,
}

/// The container a cgroup path (from `/proc/PID/cgroup`) belongs to, if any.
pub fn of_cgroup(path: &str) -> Option<Container> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let pod_uid = segments.iter().find_map(|s| pod_uid(s));
    let found = segments.iter().enumerate().rev().find_map(|(i, seg)| {
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let prefixed = [
            ("docker-", Runtime::Docker),
            ("cri-containerd-", Runtime::Containerd),
            ("crio-", Runtime::Crio),
            ("libpod-", Runtime::Podman),
        ];
        for (prefix, rt) in prefixed {
            if let Some(id) = seg.strip_prefix(prefix).filter(|id| is_id(id)) {
                return Some((rt, id.to_string()));
            }
        }
        // cgroupfs layouts: /docker/<id>, /kubepods/…/<id> (containerd or CRI-O: say
        // containerd, the common one), /lxc/<name>, lxc.payload.<name>.
        let parent = i.checked_sub(1).map(|p| segments[p]);
        if is_id(seg) {
            return match parent {
                Some("docker") => Some((Runtime::Docker, seg.to_string())),
                _ if pod_uid.is_some() => Some((Runtime::Containerd, seg.to_string())),
                _ => None,
            };
        }
        if let Some(name) = seg.strip_prefix("lxc.payload.") {
            return Some((Runtime::Lxc, name.to_string()));
        }
        (parent == Some("lxc")).then(|| (Runtime::Lxc, seg.to_string()))
    });
    let (runtime, id) = found?;
    Some(Container {
        runtime,
        id,
        pod_uid,
    })
}

/// A systemd unit a cgroup path ends in (`/system.slice/nginx.service` → `nginx.service`),
/// for naming a namespace a service made for itself (`PrivateNetwork=yes`).
pub fn systemd_unit(path: &str) -> Option<&str> {
    path.rsplit('/')
        .find(|s| s.ends_with(".service"))
        .filter(|s| !s.is_empty())
}

/// The cgroup path of a process (the unified hierarchy's, else the first named one).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let paths: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    // Prefer a path that names a container; the unified hierarchy's otherwise.
    let unified = text.lines().find_map(|l| l.strip_prefix("0::"));
    paths
        .iter()
        .copied()
        .find(|p| of_cgroup(p).is_some())
        .or(unified)
        .or(paths.first().copied())
        .map(str::to_string)
}

/// `kubepods-besteffort-pod1d2c…_5e.slice` or `pod1d2c…-5e` → the pod uid with dashes.
fn pod_uid(segment: &str) -> Option<String> {
    let seg = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = seg.rfind("pod")?;
    let uid = seg[at + 3..].replace('_', "-");
    (uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then_some(uid)
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Container names from the runtimes' local files, read once per container.
#[derive(Debug, Default)]
pub struct Names {
    cache: FxHashMap<Container, Arc<str>>,
}

/// Where the runtimes keep what names their containers (Docker's and Podman's state files,
/// the kubelet's pod log directories).
const DOCKER_CONTAINERS: &str = "/var/lib/docker/containers";
const PODMAN_CONTAINERS: &str = "/var/lib/containers/storage/overlay-containers/containers.json";
const POD_LOGS: &str = "/var/log/pods";

impl Names {
    /// `podman:web-1`, `docker:3f2a91c0d4e1` (no readable name), `k8s:payments/api-7d9f…`.
    pub fn label(&mut self, c: &Container) -> Arc<str> {
        if let Some(l) = self.cache.get(c) {
            return Arc::clone(l);
        }
        let label: Arc<str> = label(c, Path::new("/")).into();
        self.cache.insert(c.clone(), Arc::clone(&label));
        label
    }

    /// The container process `pid` runs in, labelled.
    pub fn of_pid(&mut self, pid: u32) -> Option<Arc<str>> {
        let c = of_cgroup(&cgroup_of(pid)?)?;
        Some(self.label(&c))
    }
}

/// The label of `c`, with the runtimes' files under `root` (a test's own tree).
pub fn label(c: &Container, root: &Path) -> String {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    if let Some(uid) = &c.pod_uid {
        if let Some(pod) = pod_name(&at(POD_LOGS), uid) {
            return format!("k8s:{pod}");
        }
    }
    let short = || c.id.chars().take(12).collect::<String>();
    let name = match c.runtime {
        Runtime::Docker => docker_name(&at(DOCKER_CONTAINERS), &c.id),
        Runtime::Podman => podman_name(&at(PODMAN_CONTAINERS), &c.id),
        Runtime::Lxc => Some(c.id.clone()),
        Runtime::Containerd | Runtime::Crio => None,
    };
    match (name, &c.pod_uid) {
        (Some(n), _) => format!("{}:{n}", c.runtime.name()),
        (None, Some(uid)) => format!("k8s:pod-{uid}"),
        (None, None) => format!("{}:{}", c.runtime.name(), short()),
    }
}

/// Small regular JSON state files only: a runtime's file is never allowed to cost much, nor to
/// hang a poll (a FIFO planted in its place is refused without waiting for a writer).
fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = crate::files::read_small(path, 8 << 20).ok()?;
    serde_json::from_str(&text).ok()
}

fn docker_name(dir: &Path, id: &str) -> Option<String> {
    let v = read_json(&dir.join(id).join("config.v2.json"))?;
    let name = v.get("Name")?.as_str()?.trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_string())
}

fn podman_name(file: &Path, id: &str) -> Option<String> {
    let v = read_json(file)?;
    v.as_array()?
        .iter()
        .find(|c| c.get("id").and_then(|i| i.as_str()) == Some(id))?
        .get("names")?
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_string)
}

/// `namespace/pod` from the kubelet's `/var/log/pods/<namespace>_<pod>_<uid>` directories.
fn pod_name(dir: &Path, uid: &str) -> Option<String> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let rest = name.strip_suffix(uid)?.strip_suffix('_')?;
        let (ns, pod) = rest.split_once('_')?;
        Some(format!("{ns}/{pod}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a91c0d4e1b2a3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b";

    #[test]
    fn recognises_each_runtimes_cgroup_layout() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker),
            (format!("/docker/{ID}"), Runtime::Docker),
            (format!("/libpod_parent/libpod-{ID}"), Runtime::Podman),
            (format!("/machine.slice/libpod-{ID}.scope/container"), Runtime::Podman),
            (format!("/system.slice/crio-{ID}.scope"), Runtime::Crio),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1d2c3b4a_5e6f_4a1b_9c8d_0e1f2a3b4c5d.slice/cri-containerd-{ID}.scope"
                ),
                Runtime::Containerd,
            ),
            (
                format!("/kubepods/burstable/pod1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d/{ID}"),
                Runtime::Containerd,
            ),
        ];
        for (path, rt) in cases {
            let c = of_cgroup(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!((c.runtime, c.id.as_str()), (rt, ID), "{path}");
        }
        let k8s = of_cgroup(&format!(
            "/kubepods/burstable/pod1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d/{ID}"
        ))
        .unwrap();
        assert_eq!(
            k8s.pod_uid.as_deref(),
            Some("1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d")
        );
        let lxc = of_cgroup("/lxc.payload.db/init.scope").unwrap();
        assert_eq!((lxc.runtime, lxc.id.as_str()), (Runtime::Lxc, "db"));
        assert_eq!(of_cgroup("/lxc/web").unwrap().id, "web");
        // Host processes are in no container.
        for host in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/nginx.service",
        ] {
            assert_eq!(of_cgroup(host), None, "{host}");
        }
        assert_eq!(
            systemd_unit("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        // conmon watches a podman container from outside it.
        assert_eq!(of_cgroup("/libpod_parent/conmon"), None);
    }

    #[test]
    fn names_from_the_runtimes_files() {
        let root = std::env::temp_dir().join(format!("katop-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let docker = root.join("var/lib/docker/containers").join(ID);
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(
            docker.join("config.v2.json"),
            r#"{"Name":"/web-1","ID":"x"}"#,
        )
        .unwrap();
        let podman = root.join("var/lib/containers/storage/overlay-containers");
        std::fs::create_dir_all(&podman).unwrap();
        std::fs::write(
            podman.join("containers.json"),
            format!(r#"[{{"id":"{ID}","names":["db-1"]}}]"#),
        )
        .unwrap();
        let uid = "1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d";
        std::fs::create_dir_all(root.join(format!("var/log/pods/payments_api-7d9f_{uid}")))
            .unwrap();
        let c = |runtime, pod: Option<&str>| Container {
            runtime,
            id: ID.into(),
            pod_uid: pod.map(str::to_string),
        };
        assert_eq!(label(&c(Runtime::Docker, None), &root), "docker:web-1");
        assert_eq!(label(&c(Runtime::Podman, None), &root), "podman:db-1");
        assert_eq!(
            label(&c(Runtime::Containerd, Some(uid)), &root),
            "k8s:payments/api-7d9f"
        );
        assert_eq!(label(&c(Runtime::Crio, None), &root), "crio:3f2a91c0d4e1");
        let other = "00000000-0000-0000-0000-000000000000";
        assert_eq!(
            label(&c(Runtime::Containerd, Some(other)), &root),
            format!("k8s:pod-{other}")
        );
        // A FIFO planted as the state file: no name, and no wait for a writer that never
        // comes (the test would hang here).
        let planted = root
            .join("var/lib/docker/containers")
            .join(ID)
            .join("config.v2.json");
        std::fs::remove_file(&planted).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &planted,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert_eq!(
            label(&c(Runtime::Docker, None), &root),
            "docker:3f2a91c0d4e1"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
