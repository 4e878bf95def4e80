# The sandbox image: MariaDB's own image plus libpam-script and securemysql.
# docker-compose.yml builds and runs it; see the comments there.
FROM mariadb:10.11
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpam-script python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY securemysql /src/securemysql
RUN python3 -m venv /opt/securemysql \
 && /opt/securemysql/bin/pip install --no-cache-dir '/src[sandbox]'
ENTRYPOINT ["/opt/securemysql/bin/securemysql", "sandbox", "up", "--foreground", "--json", \
            "--bind-address", "0.0.0.0", "--port", "3306", "--identity-port", "8081", \
            "--export-dir", "/export"]
