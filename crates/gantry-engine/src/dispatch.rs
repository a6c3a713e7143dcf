//! Which pending job goes to which online agent, in memory.
//!
//! The database says what is pending; this says who is online, how many free slots each
//! has, and which `resource_group`s are held. Matching is done under a plain mutex with no
//! I/O inside, so a job that becomes pending reaches a free agent in microseconds; the
//! engine then records the assignment in the database and pushes the job.

use gantry_api::agent::ServerMsg;
use std::collections::HashMap;
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone)]
pub struct Queued {
    pub job_id: i64,
    pub project_id: i64,
    pub tags: Vec<String>,
    pub resource_group: Option<String>,
    /// When it became pending (ms), for the pickup-latency histogram.
    pub queued_at: i64,
}

#[derive(Debug)]
pub(crate) struct Online {
    /// Tells a connection from the one that replaced it.
    pub conn: u64,
    pub tx: UnboundedSender<ServerMsg>,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub capacity: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Dispatcher {
    pub agents: HashMap<i64, Online>,
    queue: Vec<Queued>,
    /// Job → agent, for every job running on an agent (online or not).
    running: HashMap<i64, i64>,
    /// (project, resource_group) → the job holding it.
    groups: HashMap<(i64, String), i64>,
}

impl Dispatcher {
    pub fn enqueue(&mut self, q: Queued) {
        if !self.queue.iter().any(|x| x.job_id == q.job_id) {
            self.queue.push(q);
        }
    }

    pub fn dequeue(&mut self, job_id: i64) {
        self.queue.retain(|q| q.job_id != job_id);
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    fn busy(&self, agent: i64) -> usize {
        self.running.values().filter(|&&a| a == agent).count()
    }

    fn covers(a: &Online, tags: &[String]) -> bool {
        if tags.is_empty() {
            a.run_untagged
        } else {
            tags.iter().all(|t| a.tags.contains(t))
        }
    }

    /// Picks jobs for free agents, oldest job first, least busy agent first, and reserves
    /// their slots and resource groups.
    pub fn assign(&mut self) -> Vec<(Queued, i64)> {
        let mut out = Vec::new();
        if self.queue.is_empty() || self.agents.is_empty() {
            return out;
        }
        let mut load: HashMap<i64, usize> = self.agents.keys().map(|&a| (a, 0)).collect();
        for a in self.running.values() {
            if let Some(n) = load.get_mut(a) {
                *n += 1;
            }
        }
        let mut i = 0;
        while i < self.queue.len() {
            let q = &self.queue[i];
            if let Some(g) = &q.resource_group
                && self.groups.contains_key(&(q.project_id, g.clone()))
            {
                i += 1;
                continue;
            }
            let best = self
                .agents
                .iter()
                .filter(|(id, a)| load[*id] < a.capacity as usize && Self::covers(a, &q.tags))
                .min_by_key(|(id, _)| (load[*id], **id))
                .map(|(id, _)| *id);
            match best {
                Some(agent) => {
                    let q = self.queue.remove(i);
                    *load.get_mut(&agent).expect("agent") += 1;
                    self.running.insert(q.job_id, agent);
                    if let Some(g) = &q.resource_group {
                        self.groups.insert((q.project_id, g.clone()), q.job_id);
                    }
                    out.push((q, agent));
                }
                None => i += 1,
            }
        }
        out
    }

    /// A job runs on `agent` (after a restart, or a job that never went through the queue).
    pub fn hold(&mut self, job_id: i64, agent: Option<i64>, group: Option<(i64, String)>) {
        if let Some(a) = agent {
            self.running.insert(job_id, a);
        }
        if let Some(g) = group {
            self.groups.insert(g, job_id);
        }
    }

    /// A job ended (or its assignment failed): its slot and resource group are free.
    pub fn release(&mut self, job_id: i64) {
        self.running.remove(&job_id);
        self.groups.retain(|_, j| *j != job_id);
        self.dequeue(job_id);
    }

    pub fn agent_of(&self, job_id: i64) -> Option<i64> {
        self.running.get(&job_id).copied()
    }

    pub fn running_on(&self, agent: i64) -> usize {
        self.busy(agent)
    }

    /// Why a queued job still waits, in words for the person looking at it.
    pub fn waiting_reason(&self, job_id: i64) -> Option<String> {
        let q = self.queue.iter().find(|q| q.job_id == job_id)?;
        if let Some(g) = &q.resource_group
            && let Some(holder) = self.groups.get(&(q.project_id, g.clone()))
        {
            return Some(format!(
                "waiting for resource_group '{g}', held by job {holder}"
            ));
        }
        if self.agents.is_empty() {
            return Some("no agent is online".into());
        }
        let matching: Vec<i64> = self
            .agents
            .iter()
            .filter(|(_, a)| Self::covers(a, &q.tags))
            .map(|(id, _)| *id)
            .collect();
        if matching.is_empty() {
            return Some(if q.tags.is_empty() {
                "no online agent runs untagged jobs".into()
            } else {
                format!("no online agent has tags [{}]", q.tags.join(", "))
            });
        }
        Some(format!("all {} matching agent(s) are busy", matching.len()))
    }

    /// Sends to an agent if it is online.
    pub fn send(&self, agent: i64, msg: ServerMsg) -> bool {
        self.agents
            .get(&agent)
            .is_some_and(|a| a.tx.send(msg).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(tags: &[&str], untagged: bool, capacity: u32) -> Online {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(rx);
        Online {
            conn: 1,
            tx,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            run_untagged: untagged,
            capacity,
        }
    }

    fn q(job: i64, tags: &[&str], group: Option<&str>) -> Queued {
        Queued {
            job_id: job,
            project_id: 1,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            resource_group: group.map(str::to_string),
            queued_at: 0,
        }
    }

    #[test]
    fn tags_capacity_and_groups() {
        let mut d = Dispatcher::default();
        d.enqueue(q(1, &["gpu"], None));
        assert_eq!(d.waiting_reason(1).unwrap(), "no agent is online");
        d.agents.insert(10, online(&["linux"], true, 1));
        assert!(d.assign().is_empty());
        assert_eq!(
            d.waiting_reason(1).unwrap(),
            "no online agent has tags [gpu]"
        );
        d.enqueue(q(2, &[], None));
        d.enqueue(q(3, &["linux"], None));
        let got: Vec<(i64, i64)> = d.assign().iter().map(|(q, a)| (q.job_id, *a)).collect();
        assert_eq!(got, [(2, 10)], "oldest matching job first, one slot");
        assert_eq!(
            d.waiting_reason(3).unwrap(),
            "all 1 matching agent(s) are busy"
        );
        d.release(2);
        assert_eq!(d.assign().len(), 1);

        d.agents.insert(11, online(&["gpu", "linux"], false, 4));
        let got: Vec<i64> = d.assign().iter().map(|(q, _)| q.job_id).collect();
        assert_eq!(got, [1]);

        d.enqueue(q(4, &["gpu"], Some("prod")));
        d.enqueue(q(5, &["gpu"], Some("prod")));
        assert_eq!(d.assign().len(), 1);
        assert!(
            d.waiting_reason(5)
                .unwrap()
                .contains("resource_group 'prod', held by job 4")
        );
        d.release(4);
        assert_eq!(d.assign()[0].0.job_id, 5);
    }
}
