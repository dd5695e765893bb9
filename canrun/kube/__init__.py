"""Kubernetes objects in, plain ``canrun.spec`` data out.

``manifests`` reads YAML/JSON files, directories and stdin into dicts that
remember their lines; ``workloads`` turns any object with a pod spec (Pod,
Deployment, CronJob, List …) into a ``Workload``; ``scheduling`` decides which
node platforms a pod can land on.  These modules may use PyYAML but never the
``kubernetes`` client package: only ``kube.client`` talks to a cluster, so the
CLI's ``check`` works without one.
"""
