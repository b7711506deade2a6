package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/request"
)

// Annotations of the namespaces stagehand creates: the project that owns
// one (its id: a project path may be renamed or reused), and the one an
// operator hands an existing namespace to.
const (
	AnnotationProjectID   = "stagehand.io/project-id"
	AnnotationProjectPath = "stagehand.io/project-path"
	AnnotationAdopt       = "stagehand.io/adopt-project-id"
)

// ownership is what a namespace's annotations say of a project's right to
// it.
type ownership int

const (
	owned     ownership = iota // the project's
	adoptable                  // no owner; handed to this project
	foreign                    // another project's, or nobody's
)

// ownershipOf decides a project's right to an existing namespace: its own
// when its id is there; adoptable when it has no owner and an operator
// annotated it for this project or the runner adopts namespaces of its
// name; else foreign, with the reason.
func ownershipOf(ns *corev1.Namespace, o request.Owner) (ownership, string) {
	ann := ns.Annotations
	switch id := ann[AnnotationProjectID]; {
	case id == o.ProjectID:
		return owned, ""
	case id != "":
		return foreign, fmt.Sprintf("namespace %s belongs to project %s (id %s), not this one (id %s)", ns.Name, orUnknown(ann[AnnotationProjectPath]), id, o.ProjectID)
	case ann[AnnotationAdopt] == o.ProjectID:
		return adoptable, "an operator annotated it " + AnnotationAdopt + "=" + o.ProjectID
	}
	if o.Adopt != "" {
		if re, err := regexp.Compile("^(?:" + o.Adopt + ")$"); err == nil && re.MatchString(ns.Name) {
			return adoptable, "the runner adopts namespaces matching " + o.Adopt
		}
	}
	return foreign, fmt.Sprintf("namespace %s exists and was not created by stagehand for this project (no %s annotation); to hand it to this project, an operator runs: kubectl annotate namespace %s %s=%s", ns.Name, AnnotationProjectID, ns.Name, AnnotationAdopt, o.ProjectID)
}

func orUnknown(s string) string {
	if s == "" {
		return "(unnamed)"
	}
	return s
}

// checkProtected refuses the runner's protected namespaces.
func checkProtected(name string, protected []string) error {
	if slices.Contains(protected, name) {
		return fault.Jobf("namespace %s is protected on this runner: jobs never deploy into it nor remove it", name)
	}
	return nil
}

// claim makes sure the project may use the existing namespace ns: its
// own, or adopted now (the owner annotation written). A foreign one is
// the job's fault. An operator's command (no project id) may use any.
func (c *Cluster) claim(ctx context.Context, ns *corev1.Namespace, o request.Owner, trace io.Writer) error {
	if o.ProjectID == "" {
		return nil
	}
	switch own, why := ownershipOf(ns, o); own {
	case owned:
		return nil
	case adoptable:
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{
			AnnotationProjectID: o.ProjectID, AnnotationProjectPath: o.ProjectPath, AnnotationAdopt: nil,
		}}})
		if _, err := c.client.CoreV1().Namespaces().Patch(ctx, ns.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return apiError(err, "adopt namespace %s", ns.Name)
		}
		fmt.Fprintf(trace, "Adopted namespace %s for project %s (%s)\n", ns.Name, o.ProjectPath, why)
		return nil
	default:
		return fault.Jobf("%s", why)
	}
}

// ensureNamespace makes the environment's namespace ready for a deploy:
// created (owned by the project) when missing; waited for when it is
// still terminating after a dismiss (bounded by timeout), then created;
// claimed when it exists.
func (c *Cluster) ensureNamespace(ctx context.Context, name string, o request.Owner, timeout time.Duration, trace io.Writer) error {
	ns, err := c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err == nil && ns.Status.Phase == corev1.NamespaceTerminating {
		fmt.Fprintf(trace, "Namespace %s is still terminating (a dismiss); waiting until it is gone (up to %s)\n", name, timeout)
		if err := c.waitNamespaceGone(ctx, name, timeout); err != nil {
			return err
		}
		err = apierrors.NewNotFound(corev1.Resource("namespaces"), name)
	}
	if err == nil {
		return c.claim(ctx, ns, o, trace)
	}
	if !apierrors.IsNotFound(err) {
		return apiError(err, "read namespace %s (the credentials need get/create on namespaces, or create it beforehand)", name)
	}
	created := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ManagedLabel: "stagehand"}}}
	if o.ProjectID != "" {
		created.Annotations = map[string]string{AnnotationProjectID: o.ProjectID, AnnotationProjectPath: o.ProjectPath}
	}
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, created, metav1.CreateOptions{}); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return apiError(err, "create namespace %s", name)
		}
		// Created meanwhile (another deploy of it): claim it as it is.
		ns, err := c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return apiError(err, "read namespace %s", name)
		}
		return c.claim(ctx, ns, o, trace)
	}
	fmt.Fprintf(trace, "Created namespace %s\n", name)
	return nil
}
