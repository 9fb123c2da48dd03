"""Airflow-side integration: CRM connectors (extract and push) behind small interfaces."""
