//! SIMULATION — for scale benchmarks only (and the crate's own unit tests of executor ordering).
//!
//! An in-process [`InstanceProvider`] that keeps instances in memory and answers the manager's
//! install scripts by recognising them. It is *not* LXD and must never stand in for it in
//! end-to-end tests. What happens to the "runner" on `config.sh` and `run.sh` is delegated to
//! [`SimRunnerHooks`] (for example registering with github-sim).
//!
//! It can also simulate a cluster ([`SimProvider::with_members`]): members with a status and a
//! capacity, each instance on a member (its `target`, or the member with the fewest instances),
//! and a member taken offline ([`SimProvider::set_member_online`]) whose instances answer
//! nothing but a timeout, as a member whose daemon is gone.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use time::OffsetDateTime;

use crate::model::{InstanceType, Owner, Resources};
use crate::provider::{
    ExecOutput, ExecPurpose, ExecRequest, FilePush, Instance, InstanceProvider, InstanceSpec,
    InstanceStatus, Member, ProviderError,
};

/// What a simulated runner does when it is configured and started.
#[async_trait]
pub trait SimRunnerHooks: Send + Sync {
    /// `config.sh` in token mode; `token` was read from the token file. `false` = exit 1.
    async fn configure(&self, name: &str, labels: &str, token: &str) -> bool;
    /// `start.sh`; `jit` is the JIT config when one was pushed. `false` = run.sh exits at once.
    async fn start(&self, name: &str, jit: Option<&str>) -> bool;
    /// The runner was sent SIGTERM: it cancels its job, reports it and exits.
    async fn stop(&self, name: &str);
    /// Whether the runner is running a job, as the instance itself would tell (its hooks'
    /// records).
    async fn job_running(&self, _name: &str) -> bool {
        false
    }
    /// `guest/quiesce.sh`: `false` when a job runs; else the runner is frozen (takes no job)
    /// and `true`. The script is one process in the instance: the check and the freeze are
    /// atomic here.
    async fn quiesce(&self, name: &str) -> bool {
        !self.job_running(name).await
    }
    /// `guest/resume.sh`: thaws a frozen runner.
    async fn resume(&self, _name: &str) {}
}

/// Latencies of the simulated operations.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimLatency {
    pub create: Duration,
    pub exec: Duration,
    pub delete: Duration,
}

/// One recorded exec call.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub instance: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// How many bytes were fed to its standard input.
    pub stdin: Option<usize>,
}

/// A simulated instance.
#[derive(Debug, Clone)]
pub struct SimInstance {
    pub status: InstanceStatus,
    pub created_at: OffsetDateTime,
    pub config: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    pub files: HashMap<String, (Vec<u8>, u32)>,
    pub runner_alive: bool,
    pub runner_exit: Option<i32>,
    /// Launched from an image whose runner cannot start ([`SimProvider::break_image`]).
    pub broken: bool,
    /// Its member on a simulated cluster.
    pub location: Option<String>,
}

/// A simulated image (published from an instance).
#[derive(Debug, Clone)]
pub struct SimImage {
    pub aliases: Vec<String>,
    pub properties: BTreeMap<String, String>,
    pub files: HashMap<String, (Vec<u8>, u32)>,
    /// Its runner cannot start.
    pub broken: bool,
}

/// Where a runner's `config.sh` is once the runner tarball is unpacked (the simulation's sign
/// that the runner is in place).
fn runner_marker() -> String {
    format!("{}/config.sh", crate::install::RUNNER_DIR)
}

#[derive(Default)]
struct SimState {
    instances: BTreeMap<String, SimInstance>,
    execs: Vec<ExecRecord>,
    /// Every exec ever run (the log above keeps the latest only).
    exec_total: u64,
    calls: Vec<String>,
    fail_creates: usize,
    fail_configures: usize,
    profiles: Vec<String>,
    pools: Vec<String>,
    images: BTreeMap<String, SimImage>,
    next_image: u64,
    /// A simulated cluster's members; `None`: a standalone server.
    members: Option<Vec<Member>>,
}

/// The simulated provider.
pub struct SimProvider {
    state: Mutex<SimState>,
    latency: SimLatency,
    /// Whether exec feeds standard input (else the install bundle is pushed as a file).
    stdin: bool,
    hooks: Option<Arc<dyn SimRunnerHooks>>,
}

impl SimProvider {
    pub fn new(latency: SimLatency, hooks: Option<Arc<dyn SimRunnerHooks>>) -> Self {
        Self {
            state: Mutex::default(),
            latency,
            stdin: true,
            hooks,
        }
    }

    /// A provider whose exec cannot feed standard input, as over HTTPS: the manager pushes
    /// the install bundle as a file first.
    pub fn without_stdin(mut self) -> Self {
        self.stdin = false;
        self
    }

    /// Adds an instance as if someone else had made it.
    pub fn add_instance(&self, name: &str, config: BTreeMap<String, String>, age: Duration) {
        self.state.lock().instances.insert(
            name.to_owned(),
            SimInstance {
                status: InstanceStatus::Running,
                created_at: OffsetDateTime::now_utc() - age,
                config,
                profiles: Vec::new(),
                files: HashMap::new(),
                runner_alive: true,
                runner_exit: None,
                broken: false,
                location: None,
            },
        );
    }

    /// A simulated cluster with these members (their status, groups and capacity).
    pub fn with_members(self, members: Vec<Member>) -> Self {
        self.state.lock().members = Some(members);
        self
    }

    /// Takes a simulated member offline (its instances stop answering) or brings it back.
    pub fn set_member_online(&self, member: &str, online: bool) {
        if let Some(m) = self
            .state
            .lock()
            .members
            .iter_mut()
            .flatten()
            .find(|m| m.name == member)
        {
            m.online = online;
        }
    }

    /// Puts an existing instance on a member (a test's or benchmark's fleet).
    pub fn set_location(&self, name: &str, member: &str) {
        if let Some(i) = self.state.lock().instances.get_mut(name) {
            i.location = Some(member.to_owned());
        }
    }

    /// Instances per member.
    pub fn per_member(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for i in self.state.lock().instances.values() {
            if let Some(m) = &i.location {
                *counts.entry(m.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// An error when `name` lives on an offline member: what a call to it meets (a bounded
    /// timeout).
    fn reachable(&self, name: &str) -> Result<(), ProviderError> {
        let s = self.state.lock();
        let location = s.instances.get(name).and_then(|i| i.location.as_deref());
        let offline =
            location.is_some_and(|l| s.members.iter().flatten().any(|m| m.name == l && !m.online));
        if offline {
            return Err(ProviderError::Timeout {
                what: format!("instance {name} on offline member"),
            });
        }
        Ok(())
    }

    /// A running instance whose runner is not started yet (still installing).
    pub fn add_booting_instance(&self, name: &str, config: BTreeMap<String, String>) {
        self.add_instance(name, config, Duration::ZERO);
        if let Some(i) = self.state.lock().instances.get_mut(name) {
            i.runner_alive = false;
        }
    }

    pub fn instance(&self, name: &str) -> Option<SimInstance> {
        self.state.lock().instances.get(name).cloned()
    }

    pub fn instance_names(&self) -> Vec<String> {
        self.state.lock().instances.keys().cloned().collect()
    }

    /// Ends the runner process in an instance as an ephemeral runner does after its job.
    pub fn finish_runner(&self, name: &str) {
        if let Some(i) = self.state.lock().instances.get_mut(name) {
            i.runner_alive = false;
            i.runner_exit = Some(0);
        }
    }

    /// Kills the runner process in an instance.
    pub fn kill_runner(&self, name: &str) {
        if let Some(i) = self.state.lock().instances.get_mut(name) {
            i.runner_alive = false;
            i.runner_exit = Some(137);
        }
    }

    /// Writes a file as the hooks inside the instance would.
    pub fn write_file(&self, name: &str, path: &str, content: &str) {
        if let Some(i) = self.state.lock().instances.get_mut(name) {
            i.files
                .insert(path.to_owned(), (content.as_bytes().to_vec(), 0o644));
        }
    }

    /// The next `n` creations fail.
    pub fn fail_next_creates(&self, n: usize) {
        self.state.lock().fail_creates = n;
    }

    /// The next `n` `config.sh` runs exit 1.
    pub fn fail_next_configures(&self, n: usize) {
        self.state.lock().fail_configures = n;
    }

    pub fn execs(&self) -> Vec<ExecRecord> {
        self.state.lock().execs.clone()
    }

    /// How many execs ran in all.
    pub fn exec_count(&self) -> u64 {
        self.state.lock().exec_total
    }

    /// `create NAME`, `delete NAME`, `profile NAME`, `pool PATH`, in call order.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().calls.clone()
    }

    /// How many calls of the log start with `prefix` (`"create "`, `"delete "`...).
    pub fn calls_starting(&self, prefix: &str) -> usize {
        let state = self.state.lock();
        state.calls.iter().filter(|c| c.starts_with(prefix)).count()
    }

    async fn pause(d: Duration) {
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    fn file_text(&self, name: &str, path: &str) -> Option<String> {
        self.state
            .lock()
            .instances
            .get(name)
            .and_then(|i| i.files.get(path))
            .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
    }

    /// What the unpack exec does to the pushed install bundle: its files land at their paths.
    fn unpack_bundle(&self, name: &str) -> Result<(), String> {
        let mut s = self.state.lock();
        let instance = s.instances.get_mut(name).ok_or("no instance")?;
        let (bundle, _) = instance
            .files
            .remove(crate::install::BUNDLE_PATH)
            .ok_or("no bundle")?;
        let mut archive = tar::Archive::new(bundle.as_slice());
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let path = entry.path().map_err(|e| e.to_string())?.into_owned();
            let mode = entry.header().mode().map_err(|e| e.to_string())?;
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).map_err(|e| e.to_string())?;
            if path.to_str() == Some(crate::guest::STAGED_TARBALL) {
                instance
                    .files
                    .insert(runner_marker(), (b"#!/bin/sh\n".to_vec(), 0o755));
            }
            if let Ok(rest) = path.strip_prefix(crate::install::STAGED_FILES) {
                instance
                    .files
                    .insert(format!("/{}", rest.display()), (content, mode));
            }
        }
        Ok(())
    }

    /// Launches from the image with `alias` start no runner from now on (a broken image).
    pub fn break_image(&self, alias: &str) {
        for image in self.state.lock().images.values_mut() {
            if image.aliases.iter().any(|a| a == alias) {
                image.broken = true;
            }
        }
    }

    /// The simulated images by fingerprint.
    pub fn images(&self) -> BTreeMap<String, SimImage> {
        self.state.lock().images.clone()
    }

    fn remove_file(&self, name: &str, path: &str) {
        if let Some(i) = self.state.lock().instances.get_mut(name) {
            i.files.remove(path);
        }
    }
}

fn arg_after(script: &str, flag: &str) -> String {
    let mut words = script.split_whitespace();
    while let Some(w) = words.next() {
        if w == flag {
            return words
                .next()
                .unwrap_or_default()
                .trim_matches('\'')
                .to_owned();
        }
    }
    String::new()
}

fn out(exit_code: i32, stdout: impl Into<String>) -> ExecOutput {
    ExecOutput {
        exit_code,
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

#[async_trait]
impl InstanceProvider for SimProvider {
    async fn list_instances(&self, _owner: &Owner) -> Result<Vec<Instance>, ProviderError> {
        Self::pause(self.latency.exec).await;
        Ok(self
            .state
            .lock()
            .instances
            .iter()
            .map(|(name, i)| Instance {
                name: name.clone(),
                status: i.status,
                created_at: i.created_at,
                config: i.config.clone(),
                location: i.location.clone(),
            })
            .collect())
    }

    async fn cluster_members(&self) -> Result<Option<Vec<Member>>, ProviderError> {
        Ok(self.state.lock().members.clone().map(|members| {
            members
                .into_iter()
                .map(|m| Member {
                    // An offline member's resources cannot be read.
                    capacity: m.capacity.filter(|_| m.online),
                    ..m
                })
                .collect()
        }))
    }

    async fn ensure_pool(&self, path: &Path) -> Result<(), ProviderError> {
        let mut s = self.state.lock();
        push_bounded(&mut s.calls, format!("pool {}", path.display()));
        s.pools.push(path.display().to_string());
        Ok(())
    }

    async fn ensure_profile(
        &self,
        resources: &Resources,
        _instance_type: InstanceType,
        _with_pool: bool,
    ) -> Result<String, ProviderError> {
        let name = resources.profile_name();
        let mut s = self.state.lock();
        push_bounded(&mut s.calls, format!("profile {name}"));
        if !s.profiles.contains(&name) {
            s.profiles.push(name.clone());
        }
        Ok(name)
    }

    async fn create_and_start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        Self::pause(self.latency.create).await;
        let mut s = self.state.lock();
        push_bounded(&mut s.calls, format!("create {}", spec.name));
        if s.fail_creates > 0 {
            s.fail_creates -= 1;
            return Err(ProviderError::failed(
                "creating instance",
                "simulated failure",
            ));
        }
        if s.instances.contains_key(spec.name.as_str()) {
            return Err(ProviderError::failed("creating instance", "already exists"));
        }
        let location = match &s.members {
            None => None,
            Some(members) => {
                // As LXD: a member by name, `@group`, or the member with the fewest instances.
                let mut load: BTreeMap<&str, usize> = BTreeMap::new();
                for i in s.instances.values() {
                    if let Some(m) = &i.location {
                        *load.entry(m.as_str()).or_insert(0) += 1;
                    }
                }
                let allowed = |m: &Member| match spec.target.as_deref() {
                    None => true,
                    Some(t) => match t.strip_prefix('@') {
                        Some(group) => m.groups.iter().any(|g| g == group),
                        None => m.name == t,
                    },
                };
                let chosen = members
                    .iter()
                    .filter(|m| allowed(m))
                    .filter(|m| m.online)
                    .min_by_key(|m| (load.get(m.name.as_str()).copied().unwrap_or(0), &m.name));
                match chosen {
                    Some(m) => Some(m.name.clone()),
                    None => {
                        return Err(ProviderError::failed(
                            "creating instance",
                            format!("no online member for target {:?}", spec.target),
                        ))
                    }
                }
            }
        };
        let image = s
            .images
            .values()
            .find(|i| i.aliases.contains(&spec.image))
            .cloned();
        s.instances.insert(
            spec.name.to_string(),
            SimInstance {
                status: InstanceStatus::Running,
                created_at: OffsetDateTime::now_utc(),
                config: spec.config.clone(),
                profiles: spec.profiles.clone(),
                files: image.as_ref().map(|i| i.files.clone()).unwrap_or_default(),
                runner_alive: false,
                runner_exit: None,
                broken: image.is_some_and(|i| i.broken),
                location,
            },
        );
        Ok(())
    }

    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, ProviderError> {
        Self::pause(self.latency.exec).await;
        self.reachable(name)?;
        {
            let mut s = self.state.lock();
            s.exec_total += 1;
            push_bounded(
                &mut s.execs,
                ExecRecord {
                    instance: name.to_owned(),
                    argv: request.argv.clone(),
                    env: request.env.clone(),
                    stdin: request.stdin.as_ref().map(Vec::len),
                },
            );
            match s.instances.get(name) {
                None => return Err(ProviderError::NotFound(name.to_owned())),
                Some(i) if i.status != InstanceStatus::Running => {
                    return Err(ProviderError::failed("exec", "instance not running"))
                }
                Some(_) => {}
            }
        }
        if request.purpose == ExecPurpose::Quiesce {
            let idle = match &self.hooks {
                Some(h) => h.quiesce(name).await,
                None => true,
            };
            return Ok(out(if idle { 0 } else { crate::guest::JOB_RUNNING }, ""));
        }
        if request.purpose == ExecPurpose::Resume {
            if let Some(h) = &self.hooks {
                h.resume(name).await;
            }
            return Ok(out(0, ""));
        }
        if request.purpose == ExecPurpose::Stop {
            if let Some(i) = self.state.lock().instances.get_mut(name) {
                i.runner_alive = false;
                i.runner_exit = Some(143);
            }
            if let Some(h) = &self.hooks {
                h.stop(name).await;
            }
            return Ok(out(0, ""));
        }
        if matches!(request.purpose, ExecPurpose::Setup | ExecPurpose::Bake) {
            if let Some(input) = request.stdin.as_ref().filter(|_| self.stdin) {
                // What `cat >BUNDLE_PATH` does with the standard input.
                if let Some(i) = self.state.lock().instances.get_mut(name) {
                    i.files.insert(
                        crate::install::BUNDLE_PATH.to_owned(),
                        (input.clone(), 0o600),
                    );
                }
            }
            if let Err(e) = self.unpack_bundle(name) {
                return Ok(out(2, e));
            }
        }
        if request.purpose == ExecPurpose::Bake {
            return Ok(out(0, "unpacked\nbaked"));
        }
        if request.purpose == ExecPurpose::Setup {
            let (in_place, broken) = self
                .state
                .lock()
                .instances
                .get(name)
                .map(|i| (i.files.contains_key(&runner_marker()), i.broken))
                .unwrap_or_default();
            if !in_place {
                return Ok(out(2, "config.sh: not found"));
            }
            if broken {
                if let Some(i) = self.state.lock().instances.get_mut(name) {
                    i.runner_exit = Some(1);
                }
                return Ok(out(0, "unpacked\nexited 1"));
            }
            let register = self
                .file_text(name, crate::install::REGISTER_SCRIPT)
                .unwrap_or_default();
            if register.contains("RM_REGISTER=token") {
                let token_file = format!("{}/.registration-token", crate::install::RUNNER_DIR);
                let token = self.file_text(name, &token_file);
                self.remove_file(name, &token_file);
                let fail = {
                    let mut s = self.state.lock();
                    let fail = s.fail_configures > 0;
                    s.fail_configures = s.fail_configures.saturating_sub(1);
                    fail
                };
                let Some(token) = token.filter(|_| !fail) else {
                    return Ok(out(1, "unpacked\nconfig-failed 1"));
                };
                let ok = match &self.hooks {
                    Some(h) => {
                        h.configure(name, &arg_after(&register, "--labels"), &token)
                            .await
                    }
                    None => true,
                };
                if !ok {
                    return Ok(out(1, "unpacked\nconfig-failed 1"));
                }
            }
            let jit_file = format!("{}/.jitconfig", crate::install::RUNNER_DIR);
            let jit = self.file_text(name, &jit_file);
            self.remove_file(name, &jit_file);
            let alive = match &self.hooks {
                Some(h) => h.start(name, jit.as_deref()).await,
                None => true,
            };
            if let Some(i) = self.state.lock().instances.get_mut(name) {
                i.runner_alive = alive;
                i.runner_exit = (!alive).then_some(1);
            }
            return Ok(out(
                0,
                if alive {
                    "unpacked\nalive"
                } else {
                    "unpacked\nexited 1"
                },
            ));
        }
        let (alive, exit) = self
            .state
            .lock()
            .instances
            .get(name)
            .map(|i| (i.runner_alive, i.runner_exit))
            .unwrap_or((false, None));
        if request.purpose == ExecPurpose::Probe {
            return Ok(match exit {
                Some(0) => out(crate::install::PROBE_FINISHED, ""),
                Some(_) => out(1, ""),
                None if alive => out(0, ""),
                None => out(crate::install::PROBE_NOT_STARTED, ""),
            });
        }
        Ok(out(0, ""))
    }

    fn streams_stdin(&self) -> bool {
        self.stdin
    }

    async fn push_file(&self, name: &str, file: &FilePush) -> Result<(), ProviderError> {
        Self::pause(self.latency.exec).await;
        let mut s = self.state.lock();
        let instance = s
            .instances
            .get_mut(name)
            .ok_or_else(|| ProviderError::NotFound(name.to_owned()))?;
        instance
            .files
            .insert(file.path.clone(), (file.content.clone(), file.mode));
        Ok(())
    }

    async fn pull_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, ProviderError> {
        let s = self.state.lock();
        let instance = s
            .instances
            .get(name)
            .ok_or_else(|| ProviderError::NotFound(name.to_owned()))?;
        Ok(instance.files.get(path).map(|(b, _)| b.clone()))
    }

    async fn delete(&self, name: &str) -> Result<(), ProviderError> {
        Self::pause(self.latency.delete).await;
        self.reachable(name)?;
        let mut s = self.state.lock();
        push_bounded(&mut s.calls, format!("delete {name}"));
        s.instances.remove(name);
        Ok(())
    }

    async fn image_fingerprint(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        let s = self.state.lock();
        // A published image by its alias; any other alias is a base image that exists.
        Ok(Some(
            s.images
                .iter()
                .find(|(_, i)| i.aliases.iter().any(|a| a == alias))
                .map_or_else(|| format!("base-{alias}"), |(fp, _)| fp.clone()),
        ))
    }

    async fn list_images(&self) -> Result<Vec<crate::provider::ImageInfo>, ProviderError> {
        Ok(self
            .state
            .lock()
            .images
            .iter()
            .map(|(fp, i)| crate::provider::ImageInfo {
                fingerprint: fp.clone(),
                aliases: i.aliases.clone(),
                properties: i.properties.clone(),
                size: i.files.values().map(|(c, _)| c.len() as u64).sum(),
            })
            .collect())
    }

    async fn stop(&self, name: &str) -> Result<(), ProviderError> {
        let mut s = self.state.lock();
        push_bounded(&mut s.calls, format!("stop {name}"));
        let instance = s
            .instances
            .get_mut(name)
            .ok_or_else(|| ProviderError::NotFound(name.to_owned()))?;
        instance.status = InstanceStatus::Stopped;
        instance.runner_alive = false;
        Ok(())
    }

    async fn publish(
        &self,
        name: &str,
        alias: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<String, ProviderError> {
        let mut s = self.state.lock();
        push_bounded(&mut s.calls, format!("publish {name} as {alias}"));
        let files = match s.instances.get(name) {
            None => return Err(ProviderError::NotFound(name.to_owned())),
            Some(i) if i.status != InstanceStatus::Stopped => {
                return Err(ProviderError::failed(
                    "publishing",
                    "Cannot export a running instance as an image",
                ))
            }
            Some(i) => i.files.clone(),
        };
        if s.images
            .values()
            .any(|i| i.aliases.iter().any(|a| a == alias))
        {
            return Err(ProviderError::failed(
                "publishing",
                format!("Alias \"{alias}\" already exists"),
            ));
        }
        s.next_image += 1;
        let fingerprint = format!("{:064x}", s.next_image);
        s.images.insert(
            fingerprint.clone(),
            SimImage {
                aliases: vec![alias.to_owned()],
                properties: properties.clone(),
                files,
                broken: false,
            },
        );
        Ok(fingerprint)
    }

    async fn set_image_properties(
        &self,
        fingerprint: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        let mut s = self.state.lock();
        let image = s
            .images
            .get_mut(fingerprint)
            .ok_or_else(|| ProviderError::NotFound(fingerprint.to_owned()))?;
        image.properties = properties.clone();
        Ok(())
    }

    async fn delete_image(&self, fingerprint: &str) -> Result<(), ProviderError> {
        let mut s = self.state.lock();
        push_bounded(&mut s.calls, format!("delete image {fingerprint}"));
        s.images.remove(fingerprint);
        Ok(())
    }
}

/// The call and exec logs keep the most recent entries only, so that a long benchmark does not
/// measure the simulator's own memory.
const LOG_CAP: usize = 4096;

fn push_bounded<T>(log: &mut Vec<T>, entry: T) {
    if log.len() >= LOG_CAP {
        log.drain(..LOG_CAP / 2);
    }
    log.push(entry);
}
