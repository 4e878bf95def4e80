#!/bin/sh
# Deployment gate: stop a release when the application could not log in to its
# database, or when the server's security posture fails.
#
# Runs `securemysql check --json --strict` with the identity the pipeline has
# (a managed identity, a workload identity, or `az login`) and saves the JSON
# report. It prints a one-line verdict and, on failure, the cause and the fix.
# It exits with the check's exit code: 0 lets the deployment go on, anything
# else stops it.
#
# Settings come from the environment:
#   AZURE_MYSQL_HOST       server host name                       (required)
#   AZURE_MYSQL_USER       MySQL user of the deploying identity   (required)
#   AZURE_MYSQL_PORT       default 3306
#   AZURE_MYSQL_DATABASE   optional
#   AZURE_MYSQL_SSL_CA     optional CA file; default: certifi plus the Azure roots
#   AZURE_MYSQL_CLIENT_ID  optional client ID of a user-assigned managed identity
#   CHECK_REPORT           where to save the JSON report (default: check-report.json)
#   SECUREMYSQL, PYTHON    the commands to run (default: securemysql, python3)
set -u

: "${AZURE_MYSQL_HOST:?set AZURE_MYSQL_HOST to the server host name}"
: "${AZURE_MYSQL_USER:?set AZURE_MYSQL_USER to the MySQL user of the deploying identity}"
report="${CHECK_REPORT:-check-report.json}"

set -- --host "$AZURE_MYSQL_HOST" --port "${AZURE_MYSQL_PORT:-3306}" --user "$AZURE_MYSQL_USER"
[ -n "${AZURE_MYSQL_DATABASE:-}" ] && set -- "$@" --database "$AZURE_MYSQL_DATABASE"
[ -n "${AZURE_MYSQL_SSL_CA:-}" ] && set -- "$@" --ssl-ca "$AZURE_MYSQL_SSL_CA"
[ -n "${AZURE_MYSQL_CLIENT_ID:-}" ] && set -- "$@" --client-id "$AZURE_MYSQL_CLIENT_ID"

"${SECUREMYSQL:-securemysql}" check "$@" --json --strict > "$report"
status=$?

case $status in
  0)  verdict="passed" ;;
  10|11) verdict="failed: the server cannot be reached (DNS or TCP); check the firewall and private endpoint" ;;
  12) verdict="failed: TLS could not be verified; check the CA bundle and the host name" ;;
  13) verdict="failed: no access token; check the pipeline's Azure identity" ;;
  14) verdict="failed: the server rejected the token; check the MySQL user for this identity" ;;
  15) verdict="failed: the session could not be used; check the database and grants" ;;
  16) verdict="failed: a security posture item failed; see the report" ;;
  2)  verdict="failed: invalid options" ;;
  *)  verdict="failed with exit code $status" ;;
esac
echo "Database gate $verdict (exit code $status, report in $report)"

# Print the failed stage's cause and fix, and the failed posture items, from the report.
if [ "$status" -ne 0 ] && [ -s "$report" ]; then
  "${PYTHON:-python3}" - "$report" <<'PY'
import json
import sys

with open(sys.argv[1]) as file:
    report = json.load(file)
print(f"  {report['result']['message']}")
for stage in report["stages"]:
    problem = stage.get("problem")
    if stage["status"] == "fail" and problem:
        print(f"  {stage['name']}: {problem['cause']}")
        print(f"  fix: {problem['fix']}")
for item in report["posture"]:
    if item["status"] == "fail":
        print(f"  posture {item['name']} = {item['value']}: {item['detail']}")
PY
fi
exit "$status"
