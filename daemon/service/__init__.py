"""Running the daemon as a service: the unit, agent and task files, and installing them."""
