"""``canrun audit``: judge every workload already running in a cluster, with the engine the webhook uses.

inventory  list workloads through the API and fold owned objects into their controllers
scan       run the shared Validator over them (node platforms from the cluster's Nodes)
document   the audit as one JSON document (``--format json``; the HTML and Markdown render it)
policyreport / html / markdown   the report formats
"""

from canrun.audit.model import AuditRun

__all__ = ["AuditRun"]
