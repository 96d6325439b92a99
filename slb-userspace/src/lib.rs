pub mod agent;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod planner;
pub mod sched;
