//! containerd's Tasks service: a container's running process, paused and
//! resumed around a commit.

use std::collections::HashMap;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    GetRequest as GetTaskRequest, ListTasksRequest, PauseTaskRequest, ResumeTaskRequest,
};
use containerd_client::tonic::Code;
use serde::Serialize;

use super::{Containerd, Error};

/// The state of a container's task, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// The container has no task (it was created but never started, or its
    /// task was deleted).
    None,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
    Unknown,
}

impl TaskState {
    fn from_status(status: i32) -> Self {
        use containerd_client::types::v1::Status;
        match Status::try_from(status) {
            Ok(Status::Created) => Self::Created,
            Ok(Status::Running) => Self::Running,
            Ok(Status::Stopped) => Self::Stopped,
            Ok(Status::Paused) => Self::Paused,
            Ok(Status::Pausing) => Self::Pausing,
            _ => Self::Unknown,
        }
    }
}

impl Containerd {
    /// The state of every task of the namespace, by container id.
    pub(super) async fn task_states(&self) -> Result<HashMap<String, TaskState>, Error> {
        let tasks = TasksClient::new(self.channel.clone())
            .list(self.request(ListTasksRequest::default()))
            .await
            .map_err(|s| Error::rpc("list tasks", s))?
            .into_inner()
            .tasks;
        Ok(tasks
            .into_iter()
            // containerd 1.6 names the container in `id` and leaves
            // `container_id` empty for a task's init process.
            .map(|t| {
                let id = if t.container_id.is_empty() {
                    t.id
                } else {
                    t.container_id
                };
                (id, TaskState::from_status(t.status))
            })
            .collect())
    }

    pub async fn task_state(&self, container_id: &str) -> Result<TaskState, Error> {
        let response = TasksClient::new(self.channel.clone())
            .get(self.request(GetTaskRequest {
                container_id: container_id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        match response {
            Ok(r) => Ok(r
                .into_inner()
                .process
                .map(|p| TaskState::from_status(p.status))
                .unwrap_or(TaskState::None)),
            Err(s) if s.code() == Code::NotFound => Ok(TaskState::None),
            Err(s) => Err(Error::rpc("get task", s)),
        }
    }

    pub async fn pause_task(&self, container_id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .pause(self.request(PauseTaskRequest {
                container_id: container_id.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("pause task", s))?;
        Ok(())
    }

    pub async fn resume_task(&self, container_id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .resume(self.request(ResumeTaskRequest {
                container_id: container_id.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("resume task", s))?;
        Ok(())
    }
}
