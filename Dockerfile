# Image for the docker-compose deployment: the ProX package, its DAGs and the locked stack.
FROM python:3.11-slim
WORKDIR /opt/prox
COPY requirements/lock.txt requirements/lock.txt
COPY setup.cfg pyproject.toml README.md ./
COPY prox prox
COPY features features
COPY models models
COPY plugins plugins
COPY expectations expectations
COPY sandbox sandbox
COPY dags dags
RUN pip install --no-cache-dir -c requirements/lock.txt . psycopg2-binary boto3
ENV PROX_DATA_DIR=/data
USER 1000
