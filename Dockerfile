# notiflow image: the engine and its CLI. Used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY notiflow notiflow
COPY flows flows
COPY operators operators
COPY connectors connectors
COPY schemas schemas
COPY benchmarks benchmarks
COPY sql sql
RUN pip install --no-cache-dir -e .
ENV NOTIFLOW_DATA_DIR=/data NOTIFLOW_METRICS_HOST=0.0.0.0
VOLUME /data
EXPOSE 9400 9401 9402
ENTRYPOINT ["notiflow"]
CMD ["run"]
