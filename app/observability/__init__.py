"""What operators watch: Prometheus metrics (`metrics`) and the log configuration (`logs`)."""
