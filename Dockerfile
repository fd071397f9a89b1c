# One image for every service: each container runs `python -m services.<name>` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid, so a mounted volume can be given to it; no login shell, no home beyond /app.
RUN groupadd --system --gid 10001 ticketing \
 && useradd --system --uid 10001 --gid ticketing --home-dir /app --no-create-home --shell /usr/sbin/nologin ticketing

WORKDIR /app

# Dependencies in their own layer, read from pyproject.toml: editing the source does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY README.md ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
COPY ticketing ./ticketing
RUN pip install --no-deps . \
 && mkdir -p /app/var/mail \
 && chown -R ticketing:ticketing /app/var

USER ticketing

# The gateway's port; the consumer services serve /healthz, /readyz and /metrics on 8101-8106.
EXPOSE 8000
# Asks whichever service this container runs for its /readyz (database, broker, Redis reachable).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "ticketing.healthcheck"]

CMD ["ticketing", "--help"]
