"""The KPI state: one module per thing the engine remembers between events."""
