"""Kubernetes objects in, plain ``canrun.spec`` data out.

``yamldoc`` reads YAML/JSON text into dicts that remember their lines;
``manifests`` finds and reads files, directories and stdin (and hands
kustomizations and Helm charts to ``render``, which runs their tools and maps
the output back to the source files); ``objects`` knows where each kind keeps
its pod spec; ``workloads`` turns any object with a pod spec (Pod, Deployment,
CronJob, List …) into a ``Workload``; ``admission`` reads AdmissionReviews;
``scheduling`` decides which node platforms a pod can land on.  These modules
may use PyYAML but never the ``kubernetes`` client package: only the
``kube.client`` package talks to a cluster, so the CLI's ``check`` works
without one.
"""
