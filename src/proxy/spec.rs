//! What a slot needs to start its process, shared by the slots of a group.
//!
//! The program part ([`Launch`]: program, arguments, environment, working directory) may change
//! while the group runs — a reload onto a new program (`Cluster::reload_with`) — so it sits in a
//! cell that every slot of the group reads when it starts a process; the rest is fixed at start.

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::ClusterConfig;

/// What a process of the group is started as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    /// The directory the processes run in (absolute); `None`: the master's.
    pub(crate) cwd: Option<PathBuf>,
}

impl Launch {
    /// The launch `config` describes: its program resolved as the child will find it.
    pub(crate) fn of(config: &ClusterConfig) -> Result<Self, crate::Error> {
        // Absolute, so that the child, once in it, finds the program where the master did.
        let cwd = match &config.cwd {
            Some(dir) if dir.is_absolute() => Some(dir.clone()),
            Some(dir) => Some(std::env::current_dir()?.join(dir)),
            None => None,
        };
        let (program, args) = match &config.exec {
            Some(program) => (
                crate::config::resolve_program(program, cwd.as_deref())
                    .unwrap_or_else(|| program.clone()),
                config.args.iter().flatten().map(OsString::from).collect(),
            ),
            None => (
                std::env::current_exe()?,
                match &config.args {
                    Some(args) => args.iter().map(OsString::from).collect(),
                    None => std::env::args_os().skip(1).collect(),
                },
            ),
        };
        let env = config
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        Ok(Self {
            program,
            args,
            env,
            cwd,
        })
    }
}

/// What a slot needs to start its process, shared by the slots of a cluster.
#[derive(Debug)]
pub(crate) struct SlotSpec {
    launch: RefCell<Launch>,
    pub(crate) config: ClusterConfig,
    /// The group's listening sockets, open until the cluster stops.
    pub(crate) listeners: crate::listen::Listening,
    /// The group the slots belong to.
    pub(crate) group: String,
}

impl SlotSpec {
    pub(crate) fn from_config(config: &ClusterConfig) -> Result<Self, crate::Error> {
        Ok(Self {
            launch: RefCell::new(Launch::of(config)?),
            config: config.clone(),
            listeners: crate::listen::Listening::bind(&config.listen, config.unix_socket_mode)?,
            group: crate::config::DEFAULT_GROUP.to_owned(),
        })
    }

    /// What a process started now runs.
    pub(crate) fn launch(&self) -> Launch {
        self.launch.borrow().clone()
    }

    /// Makes processes started from now on run `launch`; returns what they ran before.
    pub(crate) fn set_launch(&self, launch: Launch) -> Launch {
        self.launch.replace(launch)
    }
}
