"""hakobu.Pipeline, hakobu.Stage and hakobu.serve: functions chained by queues, each in its own processes."""
