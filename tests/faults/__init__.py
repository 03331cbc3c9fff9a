"""The fault-injection suite: scheduler processes under injected faults, checked by history."""
