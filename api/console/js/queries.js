// Every GraphQL document the console sends, in one place: the API's
// query-count test runs each of them against a full database, so none of
// them costs a query per row.

export const ME = `query Me { me { sub role namespaces repositoryPrefixes } }`;

// Which later additions this server has (see `serverFeatures`).
export const FEATURES = `query Features {
  query: __type(name: "Query") { fields { name } }
  create: __type(name: "CreateSnapshotInput") { inputFields { name } }
}`;

const SNAPSHOT_ROW = `id status target repository message createdAt finishedAt
  layerSize durationMs pausedMs failureCode requestedBy owner podName node containerId`;

export const QUOTA = `query Quota {
  me { quota { inFlight { used limit } perDay { used limit } bytes { used limit } } }
}`;

export const DESKTOPS = `query Desktops($after: String) {
  containers(first: 50, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node {
      id node image state snapshotter podNamespace podName containerName owner updatedAt
      lastSnapshot { id status target createdAt }
    } }
  }
}`;

export const CONTAINER = `query Container($node: String!, $after: String) {
  me { sub role repositoryPrefixes }
  containers(first: 50, node: $node, after: $after) {
    pageInfo { hasNextPage endCursor }
    edges { node {
      id node image state podNamespace podName containerName owner
      lastSnapshot { id status target message changes excludes compression }
    } }
  }
}`;

export const CREATE_SNAPSHOT = `mutation CreateSnapshot($input: CreateSnapshotInput!) {
  createSnapshot(input: $input) { id status }
}`;

export const PREVIEW_SNAPSHOT = `query PreviewSnapshot($input: PreviewSnapshotInput!) {
  previewSnapshot(input: $input) {
    files directories whiteouts links other totalBytes
    biggestFiles { path bytes }
    biggestDirectories { path bytes }
    excluded { pattern entries files bytes }
    findings { count secretCount warningCount truncated
      findings(first: 200) { path rule severity line size suggestedExclude } }
  }
}`;

export const SNAPSHOT = `query Snapshot($id: ID!) {
  snapshot(id: $id) {
    id status target repository message compression changes excludes
    node containerId podNamespace podName containerName requestedBy owner
    baseImage baseDigest manifestDigest layerDigest layerSize uncompressedSize
    pausedMs prepareMs durationMs failureCode failureReason
    flattened layerCount layersAboveBase
    createdAt startedAt finishedAt
    progress { bytesDone bytesTotal }
    deletion { at by manifest }
    parent { id target }
  }
}`;

export const SNAPSHOT_EVENTS = `subscription Progress($id: ID) {
  snapshotEvents(id: $id) { snapshotId status bytesDone bytesTotal at }
}`;

export const CANCEL_SNAPSHOT = `mutation Cancel($id: ID!) { cancelSnapshot(id: $id) { id status } }`;

export const DELETE_SNAPSHOT = `mutation Delete($id: ID!) { deleteSnapshot(id: $id) { id status } }`;

const TREE_NODE = `id status target createdAt layerSize failureCode parent { id }`;

export const FAMILY_ROOT = `query FamilyRoot($id: ID!) {
  snapshot(id: $id) { id ancestors(first: 1000) { id } }
}`;

// The most descendants a lineage picture shows (within the API's query
// complexity budget).
export const FAMILY_LIMIT = 200;

export const FAMILY = `query Family($id: ID!) {
  snapshot(id: $id) { ${TREE_NODE} baseImage descendants(first: ${FAMILY_LIMIT}) { ${TREE_NODE} } }
}`;

export const HISTORY = `query History($first: Int!, $after: String, $filter: SnapshotsFilter) {
  snapshots(first: $first, after: $after, filter: $filter) {
    pageInfo { hasNextPage endCursor }
    edges { node { ${SNAPSHOT_ROW} } }
  }
}`;

export const NODES = `query Nodes($after: String) {
  nodes(first: 100, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { name state agentVersion containerdVersion maxConcurrentJobs registeredAt lastSeenAt } }
  }
}`;

const ENDPOINT = `id url description eventTypes enabled disabledReason failingSince
  previousSecretExpiresAt createdBy createdAt`;

export const WEBHOOK_ENDPOINTS = `query Endpoints { webhookEndpoints { ${ENDPOINT} } }`;

export const CREATE_ENDPOINT = `mutation CreateEndpoint($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { secret endpoint { ${ENDPOINT} } }
}`;

export const ROTATE_SECRET = `mutation Rotate($id: ID!) {
  rotateWebhookSecret(id: $id) { secret endpoint { ${ENDPOINT} } }
}`;

export const UPDATE_ENDPOINT = `mutation UpdateEndpoint($id: ID!, $input: UpdateWebhookEndpointInput!) {
  updateWebhookEndpoint(id: $id, input: $input) { ${ENDPOINT} }
}`;

export const SEND_TEST = `mutation SendTest($id: ID!) { sendTestWebhook(id: $id) { id status } }`;

export const DELIVERIES = `query Deliveries($endpoint: ID, $after: String) {
  webhookDeliveries(endpoint: $endpoint, first: 10, after: $after) {
    pageInfo { hasNextPage endCursor }
    edges { node {
      id endpointId eventType status attemptCount nextAttemptAt lastStatusCode createdAt completedAt
      attempts { at statusCode error }
    } }
  }
}`;

export const REDELIVER = `mutation Redeliver($id: ID!) { redeliverWebhook(id: $id) { id status } }`;
