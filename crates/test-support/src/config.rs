//! The `runner-manager` binary's config file for a test: the simulator as GitHub, real Incus.

use std::path::Path;

use github_sim::SimHandle;

/// Where the binary's config points.
pub struct BinaryConfig<'a> {
    pub app: &'a str,
    /// The repository the runners serve (`[github] path`).
    pub repo: &'a str,
    /// The image alias the runners' instances are created from (`[lxd] image`).
    pub image: &'a str,
    pub state_dir: &'a Path,
    /// A file holding the simulator's token.
    pub token_file: &'a Path,
    pub sim: &'a SimHandle,
    pub quantity: u32,
}

impl BinaryConfig<'_> {
    /// The config text: unit 0, containers of 1 CPU, 256 MiB and 1 GiB. `[runners]` is the last
    /// table, so a caller may append keys to it, then tables of its own (`[server]`, ...).
    /// Paths are written as given.
    pub fn render(&self) -> String {
        let mut text = self.render_pools();
        text.push_str(&format!("quantity = {}\n", self.quantity));
        text
    }

    /// [`Self::render`] without `[runners] quantity` (which `[[pools]]` forbids): `[runners]`
    /// holds the pools' default resources, and stays the last table.
    pub fn render_pools(&self) -> String {
        format!(
            r#"app_name = "{app}"
unit = 0
state_dir = "{state}"

[github]
path = "{repo}"
token_file = "{token}"
api_url = "{api}"
web_url = "{web}"

[lxd]
image = "{image}"
instance_type = "container"

[runners]
cpu = 1
memory = "256MiB"
disk = "1GiB"
"#,
            app = self.app,
            repo = self.repo,
            image = self.image,
            state = self.state_dir.display(),
            token = self.token_file.display(),
            api = self.sim.api_url(),
            web = self.sim.web_url(),
        )
    }
}

/// `runner-manager --config CONFIG ARGS...` as tests run it: info logs without colour, none
/// of the environment's token or config path (the config file says everything), no standard
/// input.
pub fn binary_command(binary: &Path, config: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("RUNNER_MANAGER_GITHUB_TOKEN")
        .env_remove("RUNNER_MANAGER_CONFIG")
        .stdin(std::process::Stdio::null());
    command
}
