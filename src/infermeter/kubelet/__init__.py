"""The kubelet's pod-resources API: which pod and container hold which GPU (DaemonSet mode)."""
