"""The Prometheus text and OpenMetrics formats as read: a body's names unescaped (`escaping`) and its
families parsed (`parse`). The pipeline's first stage, and what a source that receives exposition text
inside another protocol (NATS replies) reads it with."""
