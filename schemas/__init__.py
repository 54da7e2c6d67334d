"""Event and KPI models: the wire contract of crm-kpi-stream."""
