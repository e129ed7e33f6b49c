# The ejx image used by docker-compose.yml; Kafka and PostgreSQL come from their own images there.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY adapters ./adapters
COPY consumers ./consumers
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV EJX_STATE_DIR=/var/lib/ejx
EXPOSE 8080
CMD ["ejx", "serve"]
