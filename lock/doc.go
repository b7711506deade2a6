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
// a description left by a dead holder is never shown.
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
// # Lost leases
//
// A Kubernetes lease lives 10 s (lockgate rounds its expiry down to the
// second, so 9 to 10 s) from the start of its last renewal; lockgate
// renews it from a background goroutine 3 s after it was taken and then
// every 6 s (a 3 s ticker that skips the tick after a renewal), so two
// renewals in a row that fail lose it. Another host may take the lock once
// the lease has expired. A Lease therefore reports its loss: Lost() is
// closed and Err() names the lock and says why, when
//
//   - the record says another holder has the lock, or that it is gone
//     (lockgate's own report, within a renewal period), or
//   - no renewal has succeeded up to the expiry the last successful one
//     wrote. lockgate only prints to stderr and retries while the API server
//     is unreachable ("ERROR: lock server respond with an error"), so this
//     package times the renewals itself: the loss is reported when the
//     lease expires (checked every 100 ms), at most 10 s after the last
//     successful renewal began, that is no later than another host can
//     take the lock. Hosts are assumed to keep their clocks in step (NTP);
//     a skewed host may see leases expire early or late.
//
// The holder must stop what the lock protects and Release the lease;
// Release after a loss never waits for lockgate's stopped renewal (which
// would wait forever) and never touches the new holder's record. File
// locks are never lost: Lost() is never closed.
package lock
