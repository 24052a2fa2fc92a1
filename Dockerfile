# Meter: a slim, non-root image running `meter serve`.
# Listening beyond loopback turns authentication on: give the container METER_DATABASE_URL
# and create a principal first (meter token create --role admin --name ops).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY generated ./generated
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 meter
COPY --from=build /install /usr/local
USER meter
ENV METER_LISTEN=0.0.0.0:50051 \
    METER_DATA_DIR=/home/meter/data \
    METER_METRICS_LISTEN=0.0.0.0:9464
EXPOSE 50051 9464
ENTRYPOINT ["meter"]
CMD ["serve"]
