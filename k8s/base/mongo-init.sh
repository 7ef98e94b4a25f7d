#!/bin/bash
# Job mongo-init: makes the MongoDB StatefulSet a replica set and creates p2piano's user.
# Idempotent: run it again (delete the Job and re-apply) after changing the members or
# the application password; it initiates only an uninitiated set and updates the user.
#
# Environment: MONGO_MEMBERS (host:port,...; the first one is asked to initiate),
# MONGO_REPLICA_SET, MONGO_APP_DB, MONGO_INITDB_ROOT_USERNAME/PASSWORD (root, from
# Secret mongo-secrets), MONGO_USERNAME/MONGO_PASSWORD (the application's, from Secret
# p2piano-secrets).
set -euo pipefail

IFS=',' read -r -a hosts <<< "$MONGO_MEMBERS"
auth=(--quiet --username "$MONGO_INITDB_ROOT_USERNAME" --password "$MONGO_INITDB_ROOT_PASSWORD"
      --authenticationDatabase admin)

for host in "${hosts[@]}"; do
    until mongosh --host "$host" "${auth[@]}" --eval 'db.adminCommand({ping: 1}).ok' >/dev/null 2>&1; do
        echo "waiting for $host"
        sleep 3
    done
done

# rs.initiate on the first member unless the set exists (NotYetInitialized is code 94).
mongosh --host "${hosts[0]}" "${auth[@]}" --eval '
  const members = process.env.MONGO_MEMBERS.split(",").map((host, i) => ({ _id: i, host }));
  try {
    rs.status();
    print("replica set already initiated");
  } catch (e) {
    if (e.code !== 94) throw e;
    rs.initiate({ _id: process.env.MONGO_REPLICA_SET, members });
    print("replica set " + process.env.MONGO_REPLICA_SET + " initiated with " + members.length + " member(s)");
  }
'

# The application user, on the primary (found through the replica set). It is created in
# the admin database: rooms authenticates there (MONGO_USERNAME/MONGO_PASSWORD, no
# authSource in MONGO_URI).
uri="mongodb://${MONGO_MEMBERS}/?replicaSet=${MONGO_REPLICA_SET}"
until mongosh "$uri" "${auth[@]}" --eval 'if (!db.hello().isWritablePrimary) quit(1)' >/dev/null 2>&1; do
    echo "waiting for a primary"
    sleep 3
done
mongosh "$uri" "${auth[@]}" --eval '
  const admin = db.getSiblingDB("admin");
  const user = process.env.MONGO_USERNAME;
  const roles = [{ role: "readWrite", db: process.env.MONGO_APP_DB }];
  if (admin.getUser(user) === null) {
    admin.createUser({ user, pwd: process.env.MONGO_PASSWORD, roles });
    print("created user " + user);
  } else {
    admin.updateUser(user, { pwd: process.env.MONGO_PASSWORD, roles });
    print("updated user " + user);
  }
'
