//! Events to containerd (`/tasks/create`, `/tasks/exit`, ...): every one goes through
//! [`Inner::publish`], which puts it on the one queue of the `containerd-shim` crate's
//! `RemotePublisher` (a bounded channel drained in order by one task that forwards to
//! containerd), so containerd hears them in the order the shim decided them. That order is
//! `super::exit_report`'s for a process's end and `super::delete_steps`'s for a Delete.

use std::time::SystemTime;

use containerd_shim::{event::Event, Context};
use containerd_shim_protos::{
    events::task::{TaskExit, TaskOOM},
    protobuf::{MessageDyn, MessageField},
};
use tracing::{debug, error};

use super::Inner;
use crate::{container::Process, util::timestamp};

impl Inner {
    /// Sends `event` to containerd (a failure is logged: containerd may be gone).
    pub(super) async fn publish(&self, event: Box<dyn EventMsg>) {
        let topic = event.topic();
        debug!("publish {topic}");
        if let Err(e) = self
            .publisher
            .publish(
                Context::default(),
                &topic,
                &self.namespace,
                event.into_msg(),
            )
            .await
        {
            error!("publish {topic}: {e}");
        }
    }

    /// `/tasks/oom` for container `container_id` (from the guest's OOM watcher, or with the
    /// exit of a process the guest says was OOM-killed).
    pub(super) async fn publish_oom(&self, container_id: &str) {
        self.publish(Box::new(TaskOOM {
            container_id: container_id.to_string(),
            ..Default::default()
        }))
        .await;
    }

    /// `/tasks/exit` for process `p` of container `container_id`, exited now.
    pub(super) async fn publish_exit(
        &self,
        container_id: &str,
        p: &Process,
        pid: u32,
        status: u32,
    ) {
        self.publish(Box::new(TaskExit {
            container_id: container_id.to_string(),
            id: p.task_id().to_string(),
            pid,
            exit_status: status,
            exited_at: MessageField::some(timestamp(SystemTime::now())),
            ..Default::default()
        }))
        .await;
    }
}

/// An event that knows its topic and can be sent.
pub(super) trait EventMsg: Send {
    /// The event's topic, e.g. `/tasks/exit`.
    fn topic(&self) -> String;
    /// The message to send.
    fn into_msg(self: Box<Self>) -> Box<dyn MessageDyn>;
}

impl<T: Event + Send + 'static> EventMsg for T {
    fn topic(&self) -> String {
        Event::topic(self)
    }
    fn into_msg(self: Box<Self>) -> Box<dyn MessageDyn> {
        self
    }
}
