"""GPU metrics from NVML: a poller thread, an XID event thread and a scrape-time collector."""
