// Package lock gives stagehand named locks across runner hosts, on
// github.com/werf/lockgate. Builds hold the project lock shared and a
// stage's lock while they build that stage; cleanup holds the project lock
// exclusive. Locks only spare duplicate work: a build without them is still
// correct, because stages are never overwritten.
//
// # Where locks live: STAGEHAND_SYNCHRONIZATION
//
// ":local" keeps file locks (flock(2), through lockgate's file locker) in
// a directory of the host, /var/lib/stagehand/locks unless configured
// otherwise. They hold between the processes of one host, only there, and
// vanish with a process that dies holding them. Lock names may contain any
// character: lockgate names each file by the SHA-256 of the lock's name.
// Next to the locks, holders/ has one small file per holder saying who it
// is; a waiter reads them, and files left by a dead holder are recognised
// (each is flocked by its holder while it lives) and removed.
//
// "kubernetes://NAMESPACE" keeps leases as annotations of the ConfigMap
// stagehand-<project> in NAMESPACE (both created when missing), shared by
// every host that reaches the cluster: the kubeconfig the runner was given,
// else $KUBECONFIG, else the pod's service account. lockgate writes one
// annotation lockgate.io/<hash of the name> per lock; stagehand adds
// holder.stagehand.io/<hash of the name> with the holders' descriptions
// and the lease they belong to, so a waiter is told who holds the lock and
// a description left by a dead holder is never shown. The description is
// written in the same update of the ConfigMap as lockgate's record
// (recordStore in records.go), so taking a lock and giving it back are one
// read and one write each.
//
// Anything else is refused with an error naming STAGEHAND_SYNCHRONIZATION.
//
// # Waiting
//
// Acquire polls (every 250 ms for files, every second for Kubernetes)
// instead of blocking inside lockgate, so a cancelled job stops waiting at
// once, holding nothing. The first busy answer calls Options.OnWait with
// the holders' descriptions, for the job's trace.
//
// # Leases and their renewal
//
// lockgate writes a lease valid for 10 s when a lock is taken (it rounds
// the expiry down to the second, so 9 to 10 s). stagehand then renews it
// itself (watchedBackend in kube.go) instead of leaving it to lockgate's
// 3 s ticker, which gave a renewal that took more than 4 s on a busy API
// server a lost lease: the first renewal goes out a second after the
// lease is taken, or at once when less than 8 s of it was left (taking it
// waited on a busy API server; one slower than 2 s renews the record as
// it is taken), then the lease record is read every second and, once
// less than 15 s of it is left, rewritten (in lockgate's format) to
// expire 20 s later, so a renewal has 15 s to get through. The holders of
// a shared lock share one record and renew it once between them; an
// update refused because another lock of the ConfigMap changed is made
// again at once, with a new expiry. A host that died holds its locks for
// up to 20 s.
//
// # Lost leases
//
// A Lease reports its loss: Lost() is closed and Err() names the lock and
// says why, when
//
//   - a renewal finds the record another holder's, or gone, or
//   - the lease expired without a successful renewal (checked every
//     100 ms): the API server was unreachable for the whole margin. Hosts
//     are assumed to keep their clocks in step (NTP); a skewed host may
//     see leases expire early or late.
//
// The holder must stop what the lock protects (WhileHeld gives it a
// context that ends then) and Release the lease; Release after a loss
// never waits for lockgate's stopped renewal (which would wait forever)
// and never touches the new holder's record. File locks are never lost:
// Lost() is never closed.
//
// # Who uses them
//
// For turns an operation's request.Locks into a Holding, which takes every
// lock in the operation's holder's name; ProjectLock and StageLock name
// the locks builds and cleanups take.
package lock
