FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
COPY ticketing ./ticketing
RUN pip install --no-cache-dir .
# Each container runs one service: `python -m services.<name>`; `ticketing migrate` applies the schema.
CMD ["ticketing", "--help"]
