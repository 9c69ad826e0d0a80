# One image for every OCW process; the command picks the role (worker, listen, server, status).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY trading trading
COPY signals signals
COPY activities activities
COPY workflows workflows
COPY workers workers
RUN pip install --no-cache-dir .
ENV OCW_HOME=/data
VOLUME ["/data"]
ENTRYPOINT ["ocw"]
CMD ["--help"]
