"""Devices, real or simulated: their profiles and the memory planner that fits a run to one."""
