// Package stages builds a project's images as stages shared through a
// stages storage, and publishes them: werf 1.1's build, done by the
// runner. Build takes a request.Build and answers what it published.
//
// The way through a build:
//
//   - config.go reads the config (stagehand.yaml or werf.yaml) and
//     go turns it, with the checkout's tree (tree.go), into a Plan:
//     every image's stages in werf 1.1's order, each with its signature.
//     Both are pure.
//   - build.go's Builder makes each stage available in the Store: found
//     there, or built (after the stage's lock, see package lock) and
//     stored the one way store() does it — list again, write the stage's
//     edge records, store it tag last, settle on the oldest copy.
//     Stages that run something (shell, Dockerfile) are built in the
//     host's engine (engine.go); the others the Store's way: a registry
//     Storage (storage.go, remote.go) writes them from layers without an
//     engine, the :local storage (local.go) builds them in the engine.
//   - publish.go gives each image its tags, each after its publication
//     record; sync.go copies stages between storages.
//
// What goes into the registry — tags, records, labels, annotations — is
// spelt by package stagesrepo, which cleanup reads.
package stages
