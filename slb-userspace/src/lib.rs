pub mod sched;
pub mod dataplane;
pub mod config;
pub mod planner;
pub mod agent;
pub mod cli;
