package e2e

import (
	"context"

	"github.com/moby/moby/client"

	"gitlab.com/stagehand/stagehand/jobcontainer"
)

func newDockerClient() (*client.Client, error) { return client.New(client.WithHost(h.DockerHost)) }

func jobContainers(ctx context.Context, d *client.Client) ([]string, error) {
	list, err := d.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", jobcontainer.LabelJob)})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, c := range list.Items {
		names = append(names, c.Names...)
	}
	return names, nil
}
