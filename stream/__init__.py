"""crm-kpi-stream: real-time CRM KPIs from Kafka events."""
